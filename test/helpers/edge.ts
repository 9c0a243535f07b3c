import pino from 'pino';
import { Edge, type EdgeOptions } from '../../gateway/edge.js';

/**
 * An in-process edge on loopback ports chosen by the system, linked to `centralUrl` with a gateway credential: a
 * 64 MiB outbox (a device's share of it the default quarter), resend after 2 s, keep-alive 5 s, silent unless TEST_LOG says.
 * `options` overrides any of these.
 */
export function testEdge(
  o: {
    wh: string;
    devicesFile: string;
    dataDir: string;
    centralUrl: string;
    gateway: { id: string; password: string };
  },
  options: Partial<EdgeOptions> = {},
): Edge {
  return new Edge({
    wh: o.wh,
    devicesFile: o.devicesFile,
    dataDir: o.dataDir,
    host: '127.0.0.1',
    mqttPort: 0,
    wsPort: 0,
    httpPort: 0,
    centralUrl: o.centralUrl,
    centralUsername: o.gateway.id,
    centralPassword: o.gateway.password,
    outboxMaxBytes: 64 * 1024 * 1024,
    forwardWindow: 500,
    resendAfterMs: 2_000,
    keepalive: 5,
    log: pino({ level: process.env.TEST_LOG ?? 'silent' }),
    ...options,
  });
}
