import type { FastifyInstance, FastifyReply } from 'fastify';
import type { RequestAction } from '../../protocol/index.js';
import type { Answer } from './idempotency.js';
import type { ReservationService } from './service.js';

async function send(reply: FastifyReply, answer: Answer): Promise<FastifyReply> {
  if (answer.replayed) reply.header('idempotent-replayed', 'true');
  if (answer.status === 204) return reply.status(204).send();
  return reply.status(answer.status).send(answer.body);
}

/** The command routes of CONTRACT section 6 (reservations) and their transfer counterparts. */
export function registerCommandRoutes(app: FastifyInstance, service: ReservationService): void {
  const via = (action: RequestAction, fn: () => Promise<Answer>) => service.run(action, 'http', fn);
  type Id = { Params: { id: string } };

  app.post('/v1/reservations', async (req, reply) =>
    send(reply, await via('reservations.create', () => service.reserve(req.headers['idempotency-key'], req.body))),
  );
  app.get<Id>('/v1/reservations/:id', async (req, reply) =>
    send(reply, await via('reservations.get', () => service.getReservation(req.params.id))),
  );
  app.delete<Id>('/v1/reservations/:id', async (req, reply) =>
    send(reply, await via('reservations.release', () => service.release(req.params.id))),
  );

  app.post('/v1/transfers', async (req, reply) =>
    send(reply, await via('transfers.create', () => service.createTransfer(req.headers['idempotency-key'], req.body))),
  );
  app.get<Id>('/v1/transfers/:id', async (req, reply) =>
    send(reply, await via('transfers.get', () => service.getTransfer(req.params.id))),
  );
  app.delete<Id>('/v1/transfers/:id', async (req, reply) =>
    send(reply, await via('transfers.cancel', () => service.cancelTransfer(req.params.id))),
  );
}
