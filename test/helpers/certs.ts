import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** True when the openssl CLI runs (Debian's `openssl` package); TLS tests need it to make certificates. */
export function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Paths of PEM files made by `makeCerts`: each certificate `x.pem` has its key `x.key`. */
export interface TestCerts {
  dir: string;
  /** the CA central, edges and devices trust */
  ca: string;
  /** a second CA nobody trusts */
  otherCa: string;
  /** central's certificate: SAN IP:127.0.0.1, signed by `ca` */
  server: string;
  serverKey: string;
  /** a certificate for the name central.invalid only (no IP): hostname verification must refuse it at 127.0.0.1 */
  wrongName: string;
  wrongNameKey: string;
  /** client certificates: signed by `ca`; by `otherCa`; by `ca` but expired in 2020 */
  client: string;
  clientKey: string;
  foreignClient: string;
  foreignClientKey: string;
  expiredClient: string;
  expiredClientKey: string;
  /** a client certificate signed by `ca` whose CN is the given device id (mutual TLS ties the CN to the username) */
  clientFor(id: string): { cert: string; key: string };
  remove(): Promise<void>;
}

const run = (dir: string, args: string[]) =>
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });

// A config of our own, so the machine's openssl.cnf adds no extensions of its own.
const CONFIG = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
[wrong_name_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:central.invalid
[client_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
`;

/**
 * A CA, a second CA, server and client certificates (one expired), made by openssl in a temp folder. EC P-256: fast.
 * `client` names the device gw-tls; `ids` get client certificates of their own (`clientFor`).
 */
export async function makeCerts(ids: string[] = []): Promise<TestCerts> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-certs-'));
  await fs.writeFile(path.join(dir, 'openssl.cnf'), CONFIG);
  await fs.writeFile(path.join(dir, 'index.txt'), '');
  await fs.writeFile(path.join(dir, 'serial'), '1000\n');
  const cnf = ['-config', 'openssl.cnf'];
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const ca = (name: string) =>
    run(dir, [
      'req',
      ...cnf,
      '-x509',
      ...newKey,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-extensions',
      'ca_ext',
    ]);
  const csr = (name: string, cn: string) =>
    run(dir, ['req', ...cnf, '-new', ...newKey, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
  const sign = (name: string, by: string, ext: string) =>
    run(dir, [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${by}.pem`,
      '-CAkey',
      `${by}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '2',
      '-extfile',
      'openssl.cnf',
      '-extensions',
      ext,
    ]);
  ca('ca');
  ca('other-ca');
  csr('server', '127.0.0.1');
  sign('server', 'ca', 'server_ext');
  csr('wrong-name', 'central.invalid');
  sign('wrong-name', 'ca', 'wrong_name_ext');
  csr('client', 'gw-tls');
  sign('client', 'ca', 'client_ext');
  csr('foreign-client', 'gw-tls');
  sign('foreign-client', 'other-ca', 'client_ext');
  csr('expired-client', 'gw-tls');
  // `openssl ca` takes explicit dates (x509 -req only counts days from now): valid for one day in 2020.
  run(dir, [
    'ca',
    ...cnf,
    '-batch',
    '-notext',
    '-cert',
    'ca.pem',
    '-keyfile',
    'ca.key',
    '-in',
    'expired-client.csr',
    '-out',
    'expired-client.pem',
    '-startdate',
    '20200101000000Z',
    '-enddate',
    '20200102000000Z',
    '-extfile',
    'openssl.cnf',
    '-extensions',
    'client_ext',
  ]);
  for (const id of ids) {
    csr(`id-${id}`, id);
    sign(`id-${id}`, 'ca', 'client_ext');
  }
  const p = (f: string) => path.join(dir, f);
  return {
    dir,
    ca: p('ca.pem'),
    otherCa: p('other-ca.pem'),
    server: p('server.pem'),
    serverKey: p('server.key'),
    wrongName: p('wrong-name.pem'),
    wrongNameKey: p('wrong-name.key'),
    client: p('client.pem'),
    clientKey: p('client.key'),
    foreignClient: p('foreign-client.pem'),
    foreignClientKey: p('foreign-client.key'),
    expiredClient: p('expired-client.pem'),
    expiredClientKey: p('expired-client.key'),
    clientFor: (id: string) => {
      if (!ids.includes(id)) throw new Error(`no certificate was made for ${id}: pass it to makeCerts`);
      return { cert: p(`id-${id}.pem`), key: p(`id-${id}.key`) };
    },
    remove: () => fs.rm(dir, { recursive: true, force: true }),
  };
}
