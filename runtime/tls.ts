import { X509Certificate } from 'node:crypto';
import fs from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { port, str, opt } from './options.js';

// Keeps each spec's literal type, so the parsed values keep theirs.

/** An MQTT-over-TLS listener (edge: for devices; central: for edges, processors, displays). */
export const tlsListenerSpecs = {
  tlsPort: opt({
    flag: 'tls-port',
    env: 'TLS_PORT',
    help: 'MQTT over TLS listener (needs --tls-cert and --tls-key); 0 picks a free port',
    parse: port,
  }),
  tlsCert: opt({
    flag: 'tls-cert',
    env: 'TLS_CERT',
    help: 'PEM certificate file (chain) of the TLS listener',
    parse: str,
  }),
  tlsKey: opt({
    flag: 'tls-key',
    env: 'TLS_KEY',
    help: 'PEM private key file of the TLS listener',
    parse: str,
    secret: true,
  }),
  tlsClientCa: opt({
    flag: 'tls-client-ca',
    env: 'TLS_CLIENT_CA',
    help: 'PEM CA file: the TLS listener then requires client certificates issued by it (mutual TLS), with username/password on top',
    parse: str,
  }),
};

/** How an edge or processor reaches central over `mqtts://` or `wss://`. */
export const centralTlsSpecs = {
  centralCa: opt({
    flag: 'central-ca',
    env: 'CENTRAL_CA',
    help: "PEM CA file that central's certificate must chain to (mqtts); unset: the system CAs",
    parse: str,
  }),
  centralCert: opt({
    flag: 'central-cert',
    env: 'CENTRAL_CERT',
    help: 'PEM client certificate file presented to central (mutual TLS; needs --central-key)',
    parse: str,
  }),
  centralKey: opt({
    flag: 'central-key',
    env: 'CENTRAL_KEY',
    help: 'PEM private key file of --central-cert',
    parse: str,
    secret: true,
  }),
};

export interface TlsListenerFiles {
  tlsPort?: number;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
}
export interface CentralTlsFiles {
  centralCa?: string;
  centralCert?: string;
  centralKey?: string;
}

export interface ListenerTls {
  port: number;
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  requestCert?: boolean;
}
export interface ClientTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/**
 * Makes an MQTT.js client's next (re)connection present these TLS credentials; the connection that is up
 * keeps its own. MQTT.js builds each new connection from `client.options`.
 */
export function reconnectWithTls(
  client: { options: { ca?: unknown; cert?: unknown; key?: unknown } },
  tls: ClientTls,
): void {
  Object.assign(client.options, { ca: undefined, cert: undefined, key: undefined }, tls);
}

/**
 * On SIGHUP, reads the TLS files again and hands them to `apply` (a certificate rotation without a restart).
 * Files that do not load, or that `apply` refuses, leave the ones in use, and the log says why.
 */
export function reloadTlsOnSighup<T>(
  log: Logger,
  load: (problems: string[]) => Promise<T>,
  apply: (loaded: T) => void,
): void {
  process.on('SIGHUP', () => {
    void (async () => {
      const problems: string[] = [];
      const loaded = await load(problems);
      if (problems.length === 0) {
        try {
          apply(loaded);
          log.info('TLS certificates reloaded');
          return;
        } catch (err) {
          problems.push((err as Error).message); // OpenSSL's message names the routine, never the content
        }
      }
      log.error({ problems }, 'TLS reload refused: the certificates in use stay');
    })();
  });
}

/** Reads a PEM file; a problem names the flag and the path, never the file's content. */
async function read(file: string, flag: string, problems: string[]): Promise<Buffer | undefined> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    problems.push(
      `--${flag} ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
    );
    return undefined;
  }
}

/** OpenSSL's verdict on the files at start-up, so a bad key or a key that does not match its certificate exits 2. */
function check(problems: string[], what: string, options: { cert?: Buffer; key?: Buffer; ca?: Buffer }): void {
  try {
    createSecureContext(options);
  } catch (err) {
    // OpenSSL's message names the failing routine (PEM, x509, key values mismatch), never the content.
    problems.push(`${what}: ${(err as Error).message}`);
  }
}

/** A CA file must hold a certificate: OpenSSL takes a file without one silently, and would then trust nothing. */
function checkCa(problems: string[], flag: string, ca: Buffer): void {
  try {
    new X509Certificate(ca);
  } catch (err) {
    problems.push(`${flag}: not a PEM certificate (${(err as Error).message})`);
  }
}

/** The TLS listener's files, read and checked; every problem is listed. */
export async function loadListenerTls(c: TlsListenerFiles, problems: string[]): Promise<ListenerTls | undefined> {
  const { tlsPort, tlsCert, tlsKey, tlsClientCa } = c;
  if (
    (tlsPort !== undefined) !== (tlsCert !== undefined && tlsKey !== undefined) ||
    (tlsCert === undefined) !== (tlsKey === undefined)
  ) {
    problems.push('--tls-port, --tls-cert and --tls-key go together');
    return undefined;
  }
  if (tlsClientCa !== undefined && tlsPort === undefined)
    problems.push('--tls-client-ca needs the TLS listener (--tls-port, --tls-cert, --tls-key)');
  if (tlsPort === undefined || tlsCert === undefined || tlsKey === undefined) return undefined;
  const cert = await read(tlsCert, 'tls-cert', problems);
  const key = await read(tlsKey, 'tls-key', problems);
  const ca = tlsClientCa === undefined ? undefined : await read(tlsClientCa, 'tls-client-ca', problems);
  if (cert === undefined || key === undefined || (tlsClientCa !== undefined && ca === undefined)) return undefined;
  const before = problems.length;
  check(problems, '--tls-cert/--tls-key', { cert, key });
  if (ca !== undefined) checkCa(problems, '--tls-client-ca', ca);
  if (problems.length > before) return undefined;
  return { port: tlsPort, cert, key, ...(ca !== undefined && { ca, requestCert: true }) };
}

/** The files presented to and trusted of central; every problem is listed. */
export async function loadCentralTls(c: CentralTlsFiles, problems: string[]): Promise<ClientTls | undefined> {
  const { centralCa, centralCert, centralKey } = c;
  if ((centralCert === undefined) !== (centralKey === undefined)) {
    problems.push('--central-cert and --central-key go together');
    return undefined;
  }
  const before = problems.length;
  const ca = centralCa === undefined ? undefined : await read(centralCa, 'central-ca', problems);
  const cert = centralCert === undefined ? undefined : await read(centralCert, 'central-cert', problems);
  const key = centralKey === undefined ? undefined : await read(centralKey, 'central-key', problems);
  if (ca !== undefined) checkCa(problems, '--central-ca', ca);
  if (cert !== undefined && key !== undefined) check(problems, '--central-cert/--central-key', { cert, key });
  if (problems.length > before || (ca === undefined && cert === undefined)) return undefined;
  return { ...(ca !== undefined && { ca }), ...(cert !== undefined && key !== undefined && { cert, key }) };
}
