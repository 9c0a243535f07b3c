import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer } from 'node:tls';
import { WebSocketServer, createWebSocketStream } from 'ws';

/** Hands a new connection to the broker. */
export type Accept = (stream: Duplex, req?: IncomingMessage) => void;

/** A listening server. */
export interface Listener {
  readonly port: number;
  /** Refuses new connections; open ones stay. */
  stopAccepting(): void;
  /** Stops accepting, destroys every open connection and resolves once the server is closed. */
  close(): Promise<void>;
}

export interface TlsListenerOptions {
  port: number;
  cert: string | Buffer;
  key: string | Buffer;
  ca?: string | Buffer | Array<string | Buffer>;
  /** Ask for a client certificate; with it, clients without a certificate signed by `ca` are refused. */
  requestCert?: boolean;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Closing for a server, tracking its sockets so close() does not wait on clients that never
 * sent CONNECT (they would hold the server open for aedes' connectTimeout).
 */
function closing(server: Server): Omit<Listener, 'port'> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  let closed: Promise<void> | undefined;
  const stopAccepting = (): Promise<void> => {
    closed ??= new Promise((resolve) => server.close(() => resolve()));
    return closed;
  };
  return {
    stopAccepting: () => void stopAccepting(),
    close: async () => {
      const done = stopAccepting();
      for (const socket of sockets) socket.destroy();
      await done;
    },
  };
}

// Bytes a socket buffers before it stops reading. Aedes handles every packet of one read together and
// reads again only when all are authorised; a larger read lets one busy link (an edge's forwarder)
// fill a larger batch per commit. 16 KiB is Node's default.
const READ_BUFFER_BYTES = 1024 * 1024;

export async function listenTcp(port: number, host: string, accept: Accept): Promise<Listener> {
  const server = createNetServer({ highWaterMark: READ_BUFFER_BYTES }, (socket) => accept(socket));
  const control = closing(server);
  return { port: await listen(server, port, host), ...control };
}

export async function listenTls(options: TlsListenerOptions, host: string, accept: Accept): Promise<Listener> {
  const server = createTlsServer(
    { cert: options.cert, key: options.key, ca: options.ca, requestCert: options.requestCert ?? false },
    (socket) => accept(socket),
  );
  const control = closing(server);
  return { port: await listen(server, options.port, host), ...control };
}

// Subprotocols MQTT clients ask for: `mqtt` (3.1.1 and 5), `mqttv3.1` (3.1).
const MQTT_SUBPROTOCOLS = ['mqtt', 'mqttv3.1'];

/** MQTT over WebSocket on any path; one WebSocket message may carry any part of the MQTT stream. */
export async function listenWebSocket(port: number, host: string, maxFrameBytes: number, accept: Accept): Promise<Listener> {
  const http = createHttpServer((_req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket only\n');
  });
  const wss = new WebSocketServer({
    server: http,
    maxPayload: maxFrameBytes,
    handleProtocols: (protocols) => MQTT_SUBPROTOCOLS.find((p) => protocols.has(p)) ?? false,
  });
  wss.on('connection', (ws, req) => {
    const stream = createWebSocketStream(ws);
    stream.on('error', () => ws.terminate());
    accept(stream, req);
  });
  const control = closing(http);
  const boundPort = await listen(http, port, host);
  return {
    port: boundPort,
    stopAccepting: control.stopAccepting,
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await control.close();
    },
  };
}
