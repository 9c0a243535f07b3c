import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { coalesceWrites } from '../runtime/coalesce.js';

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

/** A TLS listener: its certificate, key and client CA can be replaced while it runs. */
export interface TlsListener extends Listener {
  /** New connections get these; open ones keep theirs. Throws (and changes nothing) when OpenSSL refuses them. */
  setCredentials(credentials: Pick<TlsListenerOptions, 'cert' | 'key' | 'ca'>): void;
}

export interface TlsListenerOptions {
  port: number;
  cert: string | Buffer;
  key: string | Buffer;
  ca?: string | Buffer | Array<string | Buffer>;
  /** Ask for a client certificate; with it, clients without a certificate signed by `ca` are refused. */
  requestCert?: boolean;
}

/** Why a TLS client was refused: at the handshake (`handshake`) or for its certificate (`certificate`). */
export interface TlsRefusal {
  stage: 'handshake' | 'certificate';
  /** OpenSSL's verify code (CERT_HAS_EXPIRED…), `NO_CERTIFICATE`, or the handshake error's code */
  code: string;
  message: string;
  remote: string | undefined;
  /** the refused certificate's subject CN, if it sent one */
  subject?: string;
}

/** Readable reasons for the verify codes a refused client certificate most often has. */
const VERIFY_REASONS: Record<string, string> = {
  NO_CERTIFICATE: 'the client sent no certificate',
  CERT_HAS_EXPIRED: 'the client certificate has expired',
  CERT_NOT_YET_VALID: 'the client certificate is not valid yet',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the client certificate was not issued by the trusted client CA',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the client certificate was not issued by the trusted client CA',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the client certificate is self-signed',
  SELF_SIGNED_CERT_IN_CHAIN: 'the client certificate chains to an untrusted self-signed CA',
  CERT_SIGNATURE_FAILURE: "the client certificate's signature does not verify",
};

/**
 * With `requestCert`, a client must present a certificate that chains to `ca`. Node would check it and drop a
 * failing socket without saying why; so the check is made here, before the broker sees a byte, and the
 * refusal carries OpenSSL's reason for the log.
 */
function refusalOf(socket: TLSSocket): TlsRefusal | null {
  if (socket.authorized) return null;
  const cert = socket.getPeerCertificate();
  const sent = cert !== null && Object.keys(cert).length > 0;
  const code = sent ? String(socket.authorizationError ?? 'UNKNOWN') : 'NO_CERTIFICATE';
  const cn = sent ? cert.subject?.CN : undefined;
  return {
    stage: 'certificate',
    code,
    message: VERIFY_REASONS[code] ?? `the client certificate does not verify (${code})`,
    remote: socket.remoteAddress,
    ...(typeof cn === 'string' && { subject: cn }),
  };
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

// No Nagle: a PUBACK or an ack is a few bytes, and Nagle holds it back until the peer's delayed ACK
// (40 ms on Linux) whenever an earlier segment is unacknowledged. coalesceWrites already gathers the
// writes of one turn of the event loop into one segment.
const NO_DELAY = true;

export async function listenTcp(port: number, host: string, accept: Accept): Promise<Listener> {
  const server = createNetServer({ highWaterMark: READ_BUFFER_BYTES, noDelay: NO_DELAY }, (socket) => {
    coalesceWrites(socket);
    accept(socket);
  });
  const control = closing(server);
  return { port: await listen(server, port, host), ...control };
}

function requireClientCa(requestCert: boolean, ca: TlsListenerOptions['ca']): void {
  if (requestCert && ca === undefined)
    throw new Error('a TLS listener that requires client certificates needs the CA they must chain to');
}

export async function listenTls(
  options: TlsListenerOptions,
  host: string,
  accept: Accept,
  refused: (r: TlsRefusal) => void = () => {},
): Promise<TlsListener> {
  const requestCert = options.requestCert ?? false;
  requireClientCa(requestCert, options.ca);
  const server = createTlsServer(
    // rejectUnauthorized false: refusalOf() refuses instead, so the log says why (see there).
    {
      cert: options.cert,
      key: options.key,
      ca: options.ca,
      requestCert,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      noDelay: NO_DELAY,
    },
    (socket) => {
      const refusal = requestCert ? refusalOf(socket) : null;
      if (refusal === null) {
        coalesceWrites(socket);
        return accept(socket);
      }
      refused(refusal);
      socket.destroy();
    },
  );
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) =>
    refused({ stage: 'handshake', code: err.code ?? 'TLS_ERROR', message: err.message, remote: socket.remoteAddress }),
  );
  const control = closing(server);
  const setCredentials: TlsListener['setCredentials'] = ({ cert, key, ca }) => {
    requireClientCa(requestCert, ca);
    server.setSecureContext({ cert, key, ca, minVersion: 'TLSv1.2' }); // builds the context first: a bad file throws here
  };
  return { port: await listen(server, options.port, host), ...control, setCredentials };
}

// Subprotocols MQTT clients ask for: `mqtt` (3.1.1 and 5), `mqttv3.1` (3.1).
const MQTT_SUBPROTOCOLS = ['mqtt', 'mqttv3.1'];

/** MQTT over WebSocket on any path; one WebSocket message may carry any part of the MQTT stream. */
export async function listenWebSocket(
  port: number,
  host: string,
  maxFrameBytes: number,
  accept: Accept,
): Promise<Listener> {
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
