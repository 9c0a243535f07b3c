import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { listenTls } from '../../broker/listeners.js';
import { loadCentralTls, loadListenerTls } from '../../runtime/tls.js';
import { hasOpenssl, makeCerts, type TestCerts } from '../helpers/certs.js';
import { stockwire } from '../helpers/demo.js';

/** The PEM body of a key file: what must never appear in a message. */
async function pemBody(file: string): Promise<string> {
  return (await fs.readFile(file, 'utf8'))
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('-----'))
    .join('');
}

describe('TLS configuration: files read and checked at start, every problem listed, no key content in any message', {
  skip: hasOpenssl() ? false : 'needs the openssl CLI (Debian package openssl) to make certificates',
}, () => {
  let certs: TestCerts;
  let garbage: string;
  before(async () => {
    certs = await makeCerts();
    garbage = path.join(certs.dir, 'garbage.pem');
    await fs.writeFile(garbage, 'not a certificate\n');
  });
  after(async () => certs?.remove());

  it('a listener with a client CA requires client certificates; a client with a certificate presents it', async () => {
    const problems: string[] = [];
    const listener = await loadListenerTls(
      { tlsPort: 0, tlsCert: certs.server, tlsKey: certs.serverKey, tlsClientCa: certs.ca },
      problems,
    );
    assert.deepEqual(problems, []);
    assert.equal(listener?.requestCert, true);
    assert.ok(listener?.ca && listener.cert.length > 0 && listener.key.length > 0);
    const plain = await loadListenerTls({ tlsPort: 0, tlsCert: certs.server, tlsKey: certs.serverKey }, problems);
    assert.equal(plain?.requestCert, undefined, 'without a client CA, no client certificate is asked for');
    assert.equal(await loadListenerTls({}, problems), undefined, 'no TLS listener by default');
    const client = await loadCentralTls(
      { centralCa: certs.ca, centralCert: certs.client, centralKey: certs.clientKey },
      problems,
    );
    assert.deepEqual(problems, []);
    assert.ok(client?.ca && client.cert && client.key);
    assert.equal(await loadCentralTls({}, problems), undefined);
  });

  it('every bad combination and bad file is a problem that names the flag', async () => {
    const cases: [string, () => Promise<unknown>, RegExp][] = [
      [
        'port alone',
        () => loadListenerTls({ tlsPort: 8883 }, problems),
        /--tls-port, --tls-cert and --tls-key go together/,
      ],
      [
        'cert and key without a port',
        () => loadListenerTls({ tlsCert: certs.server, tlsKey: certs.serverKey }, problems),
        /go together/,
      ],
      ['cert without key', () => loadListenerTls({ tlsPort: 0, tlsCert: certs.server }, problems), /go together/],
      [
        'client CA without a listener',
        () => loadListenerTls({ tlsClientCa: certs.ca }, problems),
        /--tls-client-ca needs the TLS listener/,
      ],
      [
        'a missing file',
        () =>
          loadListenerTls({ tlsPort: 0, tlsCert: path.join(certs.dir, 'nope.pem'), tlsKey: certs.serverKey }, problems),
        /--tls-cert .*nope\.pem: no such file/,
      ],
      [
        'a key of another certificate',
        () => loadListenerTls({ tlsPort: 0, tlsCert: certs.server, tlsKey: certs.clientKey }, problems),
        /--tls-cert\/--tls-key: .*(mismatch|key values)/i,
      ],
      [
        'a key file that is no key',
        () => loadListenerTls({ tlsPort: 0, tlsCert: certs.server, tlsKey: garbage }, problems),
        /--tls-cert\/--tls-key: /,
      ],
      [
        'a missing client CA',
        () =>
          loadListenerTls(
            {
              tlsPort: 0,
              tlsCert: certs.server,
              tlsKey: certs.serverKey,
              tlsClientCa: path.join(certs.dir, 'no-ca.pem'),
            },
            problems,
          ),
        /--tls-client-ca .*: no such file/,
      ],
      [
        'a client CA file without a certificate',
        () =>
          loadListenerTls(
            { tlsPort: 0, tlsCert: certs.server, tlsKey: certs.serverKey, tlsClientCa: garbage },
            problems,
          ),
        /--tls-client-ca: not a PEM certificate/,
      ],
      [
        'a central CA file without a certificate',
        () => loadCentralTls({ centralCa: garbage }, problems),
        /--central-ca: not a PEM certificate/,
      ],
      [
        'client cert without key',
        () => loadCentralTls({ centralCert: certs.client }, problems),
        /--central-cert and --central-key go together/,
      ],
      ['client key without cert', () => loadCentralTls({ centralKey: certs.clientKey }, problems), /go together/],
      [
        'a missing central CA',
        () => loadCentralTls({ centralCa: path.join(certs.dir, 'no-ca.pem') }, problems),
        /--central-ca .*: no such file/,
      ],
      [
        'a client key of another certificate',
        () => loadCentralTls({ centralCert: certs.client, centralKey: certs.serverKey }, problems),
        /--central-cert\/--central-key: .*(mismatch|key values)/i,
      ],
    ];
    let problems: string[] = [];
    const secrets = await Promise.all([certs.serverKey, certs.clientKey].map(pemBody));
    for (const [what, load, expected] of cases) {
      problems = [];
      const result = await load();
      assert.equal(result, undefined, `${what}: nothing loaded`);
      assert.ok(
        problems.some((p) => expected.test(p)),
        `${what}: got ${JSON.stringify(problems)}`,
      );
      for (const p of problems)
        for (const s of secrets) assert.ok(!p.includes(s.slice(0, 40)), `${what}: a problem quotes a private key`);
    }
  });

  it('a listener asked to require client certificates without a CA to check them against refuses to start', async () => {
    const [cert, key] = await Promise.all([fs.readFile(certs.server), fs.readFile(certs.serverKey)]);
    await assert.rejects(
      listenTls({ port: 0, cert, key, requestCert: true }, '127.0.0.1', () => {}),
      /needs the CA they must chain to/,
    );
  });

  it('stockwire central, edge and processor exit 2 listing TLS problems', async () => {
    const missing = path.join(certs.dir, 'missing.pem');
    const central = await stockwire([
      'central',
      '--devices-file',
      missing,
      '--tls-client-ca',
      certs.ca,
      '--tls-port',
      '0',
      '--tls-cert',
      certs.server,
      '--tls-key',
      certs.clientKey,
    ]);
    assert.equal(central.code, 2, central.stderr);
    assert.match(central.stderr, /stockwire central: invalid configuration\n {2}- --tls-cert\/--tls-key: /);
    const edge = await stockwire([
      'edge',
      '--warehouse',
      'W1',
      '--devices-file',
      missing,
      '--tls-client-ca',
      certs.ca,
      '--central-cert',
      certs.client,
    ]);
    assert.equal(edge.code, 2, edge.stderr);
    assert.match(edge.stderr, /--tls-client-ca needs the TLS listener/);
    assert.match(edge.stderr, /--central-cert and --central-key go together/);
    const processor = await stockwire(['processor', '--central-url', 'mqtts://127.0.0.1:1', '--central-ca', missing]);
    assert.equal(processor.code, 2, processor.stderr);
    assert.match(processor.stderr, /--central-ca .*missing\.pem: no such file/);
    const body = await pemBody(certs.clientKey);
    assert.ok(
      ![central, edge, processor].some((r) => r.stderr.includes(body.slice(0, 40))),
      'no key content on stderr',
    );
  });
});
