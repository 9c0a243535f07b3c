import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import mqtt from 'mqtt';
import { Registry } from 'prom-client';
import { createBroker, loadDevices } from '../../broker/index.js';
import { Edge, type EdgeOptions } from '../../gateway/edge.js';
import { Central, type CentralPorts } from '../../processors/central.js';
import { StandaloneProcessor } from '../../processors/processor.js';
import { hasOpenssl, makeCerts, type TestCerts } from '../helpers/certs.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { writeDevices } from '../helpers/devices.js';
import { CapturedLog, type LogLine } from '../helpers/logs.js';
import { connect } from '../helpers/mqtt.js';
import { startStockwire } from '../helpers/process.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

const WH = 'WT';
const GW = { username: 'gw-t', password: 'pw-gateway-t' };
// Devices with a client certificate of their own (CN = device id); `pem.client` names gw-tls, a device of nobody here.
const IDS = [GW.username, 'scan-t', 'proc-t'];
const own = new Map<string, { cert: Buffer; key: Buffer }>();
const ownCert = (id: string) => {
  const c = own.get(id);
  if (!c) throw new Error(`no certificate for ${id}`);
  return c;
};

/**
 * TLS between edge and central (issue 5/7): central's listener verifies client certificates against
 * TLS_CLIENT_CA (mutual TLS), the edge verifies central's certificate and its name, and every refusal
 * says why in the log of the side that refused. Certificates are made by openssl for this run.
 */
describe('TLS between edge and central, with verification and mutual TLS', {
  skip: hasOpenssl() ? false : 'needs the openssl CLI (Debian package openssl) to make certificates',
}, () => {
  let certs: TestCerts;
  let pem: Record<
    | 'ca'
    | 'otherCa'
    | 'server'
    | 'serverKey'
    | 'wrongName'
    | 'wrongNameKey'
    | 'client'
    | 'clientKey'
    | 'foreignClient'
    | 'foreignClientKey'
    | 'expiredClient'
    | 'expiredClientKey',
    Buffer
  >;
  let db: TestDatabase;
  let devices: { dir: string; file: string };
  let central: Central;
  let ports: CentralPorts;
  const centralLog = new CapturedLog();
  const stops: (() => Promise<unknown>)[] = [];

  const edgeOptions = (log: CapturedLog, name: string, over: Partial<EdgeOptions>): EdgeOptions => ({
    wh: WH,
    devicesFile: devices.file,
    dataDir: path.join(devices.dir, name),
    host: '127.0.0.1',
    mqttPort: 0,
    wsPort: 0,
    httpPort: 0,
    centralUrl: `mqtts://127.0.0.1:${ports.mqtts}`,
    centralUsername: GW.username,
    centralPassword: GW.password,
    outboxMaxBytes: 64 * 1024 * 1024,
    forwardWindow: 100,
    resendAfterMs: 2_000,
    keepalive: 5,
    log: log.log,
    ...over,
  });
  const startEdge = async (o: EdgeOptions) => {
    const edge = new Edge(o);
    stops.push(() => edge.stop());
    return { edge, ports: await edge.start() };
  };
  const refusal = (code: RegExp) => (l: LogLine) => l.msg === 'TLS client refused' && code.test(String(l.code));

  before(async () => {
    certs = await makeCerts(IDS);
    const entries = await Promise.all(
      Object.entries(certs)
        .filter(([k, f]) => k !== 'dir' && typeof f === 'string')
        .map(async ([k, f]) => [k, await fs.readFile(f as string)] as const),
    );
    pem = Object.fromEntries(entries) as typeof pem;
    for (const id of IDS)
      own.set(id, {
        cert: await fs.readFile(certs.clientFor(id).cert),
        key: await fs.readFile(certs.clientFor(id).key),
      });
    db = await createTestDatabase('tls');
    devices = await writeDevices([
      { id: GW.username, warehouse: WH, kind: 'gateway', password: GW.password },
      { id: 'scan-t', warehouse: WH, kind: 'scanner', password: 'pw-scanner-t' },
      { id: 'proc-t', warehouse: WH, kind: 'processor', password: 'pw-processor-t' },
    ]);
    central = new Central({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: devices.dir,
      devicesFile: devices.file,
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: 0,
      httpPort: 0,
      batchMax: 100,
      batchWaitMs: 5,
      tls: { port: 0, cert: pem.server, key: pem.serverKey, ca: pem.ca, requestCert: true },
      log: centralLog.log,
    });
    ports = await central.start();
    assert.ok(ports.mqtts !== undefined && ports.mqtts > 0, 'central reports its TLS port');
  });

  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await central?.stop();
    await db?.drop();
    await certs?.remove();
    if (devices) await fs.rm(devices.dir, { recursive: true, force: true });
  });

  it('an edge bridging over mqtts with a client certificate gets its events applied at central', async () => {
    const log = new CapturedLog();
    const { edge, ports: edgePorts } = await startEdge(
      edgeOptions(log, 'edge-ok', { centralTls: { ca: pem.ca, ...ownCert(GW.username) } }),
    );
    await log.waitFor((l) => l.msg === 'connected to central', 'the link up');
    const scanner = await connect(`mqtt://127.0.0.1:${edgePorts.mqtt}`, 'scan-t', 'pw-scanner-t');
    await scanner.publishAsync(
      `wh/${WH}/dev/scan-t/event`,
      JSON.stringify({ v: 1, id: 'tls-1', type: 'received', sku: 'SKU-T', qty: 7 }),
      { qos: 1 },
    );
    let onHand: number | undefined;
    for (let i = 0; i < 150 && onHand !== 7; i++) {
      const res = await fetch(`http://127.0.0.1:${ports.http}/v1/warehouses/${WH}/stock/SKU-T`);
      if (res.status === 200) onHand = ((await res.json()) as { onHand: number }).onHand;
      if (onHand !== 7) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(onHand, 7, 'the scan is applied at central');
    assert.ok(
      centralLog.find((l) => l.msg === 'client connected' && l.device === GW.username),
      'central saw the gateway connect over TLS',
    );
    await scanner.endAsync();
    await edge.stop(); // the other edges below present the same gateway credential
  });

  it('a standalone processor connects to central over mutual TLS (CENTRAL_CA, CENTRAL_CERT, CENTRAL_KEY)', async () => {
    const from = centralLog.lines.length;
    const processor = new StandaloneProcessor({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: devices.dir,
      centralUrl: `mqtts://127.0.0.1:${ports.mqtts}`,
      username: 'proc-t',
      password: 'pw-processor-t',
      centralTls: { ca: pem.ca, ...ownCert('proc-t') },
      instance: 'tls',
      warehouses: ['WT-NONE'],
      host: '127.0.0.1',
      httpPort: 0,
      batchMax: 10,
      batchWaitMs: 5,
      log: new CapturedLog('silent').log,
    });
    stops.push(() => processor.stop());
    await processor.start(); // resolves once subscribed at central
    assert.ok(centralLog.lines.slice(from).some((l) => l.msg === 'client connected' && l.device === 'proc-t'));
    await processor.stop();
  });

  it("a standalone processor's credentials rotate for its next connection, and a refused CONNACK does not stop its retries", async () => {
    const proxy = new TcpProxy(ports.mqtts as number);
    const proxyPort = await proxy.start();
    stops.push(() => proxy.stop());
    const log = new CapturedLog();
    const processor = new StandaloneProcessor({
      databaseUrl: db.url,
      redisPrefix: 'x',
      dataDir: devices.dir,
      centralUrl: `mqtts://127.0.0.1:${proxyPort}`,
      username: 'proc-t',
      password: 'pw-processor-t',
      centralTls: { ca: pem.ca, ...ownCert('proc-t') },
      instance: 'rotate',
      warehouses: ['WT-NONE'],
      host: '127.0.0.1',
      httpPort: 0,
      batchMax: 10,
      batchWaitMs: 5,
      log: log.log,
    });
    stops.push(() => processor.stop());
    await processor.start();
    const from = centralLog.lines.length;
    processor.reloadTls({ ca: pem.ca, cert: pem.client, key: pem.clientKey }); // valid, trusted, but names gw-tls
    proxy.cut();
    const refused = await centralLog.waitFor(
      (l) => l.msg === 'connection refused' && l.reason === 'certificate_identity' && l.username === 'proc-t',
      'the reconnect with the rotated certificate',
      15_000,
      from,
    );
    assert.equal(refused.subject, 'gw-tls');
    const connects = log.lines.filter((l) => l.msg === 'connected to central').length;
    processor.reloadTls({ ca: pem.ca, ...ownCert('proc-t') });
    await log.waitFor(
      () => log.lines.filter((l) => l.msg === 'connected to central').length > connects,
      'connected again with its own certificate after a refused CONNACK',
      15_000,
    );
    await processor.stop();
  });

  it('a valid client certificate does not replace the password: a wrong one is still refused', async () => {
    const from = centralLog.lines.length;
    await assert.rejects(
      mqtt.connectAsync(
        `mqtts://127.0.0.1:${ports.mqtts}`,
        {
          ca: pem.ca,
          ...ownCert(GW.username),
          username: GW.username,
          password: 'wrong',
          clientId: `${GW.username}-pw`,
          reconnectPeriod: 0,
        },
        false,
      ),
      /Bad username or password|Not authorized|refused/i,
    );
    await centralLog.waitFor(
      (l) => l.msg === 'connection refused' && l.reason === 'bad_password',
      'the bad_password refusal',
      10_000,
      from,
    );
  });

  it("a certificate names its device: another device's valid certificate with this device's right password is refused", async () => {
    const from = centralLog.lines.length;
    // pem.client is signed by the trusted CA for gw-tls; the password is gw-t's own.
    await assert.rejects(
      mqtt.connectAsync(
        `mqtts://127.0.0.1:${ports.mqtts}`,
        { ca: pem.ca, cert: pem.client, key: pem.clientKey, ...GW, clientId: `${GW.username}-cn`, reconnectPeriod: 0 },
        false,
      ),
      /Not authorized|refused/i,
    );
    const line = await centralLog.waitFor(
      (l) => l.msg === 'connection refused' && l.reason === 'certificate_identity',
      'the certificate_identity refusal',
      10_000,
      from,
    );
    assert.equal(line.subject, 'gw-tls', 'the log names the certificate');
    assert.equal(line.username, GW.username);
    const metrics = await (await fetch(`http://127.0.0.1:${ports.http}/metrics`)).text();
    assert.match(metrics, /stockwire_broker_connection_refusals_total\{reason="certificate_identity"\} [1-9]/);
  });

  const refused: [string, { cert?: Buffer; key?: Buffer } | (() => { cert: Buffer; key: Buffer }), RegExp, RegExp][] = [
    ['no client certificate', {}, /^NO_CERTIFICATE$/, /sent no certificate/],
    [
      'a client certificate from another CA',
      () => ({ cert: pem.foreignClient, key: pem.foreignClientKey }),
      /^(UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE)$/,
      /not issued by the trusted client CA/,
    ],
    [
      'an expired client certificate',
      () => ({ cert: pem.expiredClient, key: pem.expiredClientKey }),
      /^CERT_HAS_EXPIRED$/,
      /has expired/,
    ],
  ];
  for (const [what, material, code, reason] of refused) {
    it(`central refuses ${what}, before any MQTT, and its log says why`, async () => {
      const from = centralLog.lines.length;
      const tls = typeof material === 'function' ? material() : material;
      const client = mqtt.connectAsync(
        `mqtts://127.0.0.1:${ports.mqtts}`,
        { ca: pem.ca, ...tls, ...GW, clientId: `${GW.username}-refused`, reconnectPeriod: 0, connectTimeout: 5_000 },
        false,
      );
      await assert.rejects(client);
      const line = await centralLog.waitFor(refusal(code), `a refusal with code ${code}`, 10_000, from);
      assert.match(String(line.reason), reason);
      assert.equal(line.stage, 'certificate');
      if (tls.cert) assert.equal(line.subject, 'gw-tls', 'the log names the refused certificate');
      assert.equal(
        centralLog.lines.slice(from).find((l) => l.msg === 'client connected'),
        undefined,
        'the client never reached MQTT',
      );
    });
  }

  it('an edge without a client certificate is refused by central and stays offline', async () => {
    const from = centralLog.lines.length;
    const log = new CapturedLog();
    const { ports: edgePorts } = await startEdge(edgeOptions(log, 'edge-nocert', { centralTls: { ca: pem.ca } }));
    await centralLog.waitFor(refusal(/^NO_CERTIFICATE$/), 'the edge refused for its missing certificate', 15_000, from);
    const ready = (await (await fetch(`http://127.0.0.1:${edgePorts.http}/readyz`)).json()) as { central: string };
    assert.equal(ready.central, 'offline');
    assert.equal(
      log.find((l) => l.msg === 'connected to central'),
      undefined,
    );
  });

  it("the edge verifies central: with a CA that did not sign central's certificate it refuses to connect, and its log says why", async () => {
    const from = centralLog.lines.length;
    const log = new CapturedLog();
    await startEdge(edgeOptions(log, 'edge-wrongca', { centralTls: { ca: pem.otherCa, ...ownCert(GW.username) } }));
    const line = await log.waitFor((l) => l.msg === 'central connection error', 'a connection error');
    assert.match(
      String(line.err),
      /unable to get local issuer certificate|unable to verify|self[- ]signed certificate/i,
    );
    // Central sees the edge hang up during the handshake (Node's client checks after it and sends no alert) and logs that.
    const heard = await centralLog.waitFor(
      (l) => l.msg === 'TLS client refused' && l.stage === 'handshake',
      'the handshake refusal',
      10_000,
      from,
    );
    assert.match(String(heard.code), /ECONNRESET|UNKNOWN_CA|CERTIFICATE/i);
    assert.equal(
      log.find((l) => l.msg === 'connected to central'),
      undefined,
    );
  });

  it('hostname verification is on: a certificate for another name, from the trusted CA, is refused at 127.0.0.1', async () => {
    const impostor = createBroker({
      role: 'central',
      devices: await loadDevices(devices.file),
      host: '127.0.0.1',
      mqttPort: 0,
      wsPort: null,
      tls: { port: 0, cert: pem.wrongName, key: pem.wrongNameKey },
      registry: new Registry(),
      log: new CapturedLog('silent').log,
    });
    const impostorPorts = await impostor.start();
    stops.push(() => impostor.stop());
    const log = new CapturedLog();
    await startEdge(
      edgeOptions(log, 'edge-hostname', {
        centralUrl: `mqtts://127.0.0.1:${impostorPorts.mqtts}`,
        centralTls: { ca: pem.ca, ...ownCert(GW.username) },
      }),
    );
    const line = await log.waitFor((l) => l.msg === 'central connection error', 'a connection error');
    assert.match(String(line.err), /Hostname\/IP does not match certificate's altnames/);
  });

  it("an edge's device listener with TLS_CLIENT_CA: a device with a certificate publishes, one without is refused with the reason", async () => {
    const log = new CapturedLog();
    const { ports: edgePorts } = await startEdge(
      edgeOptions(log, 'edge-devices', {
        centralUrl: `mqtt://127.0.0.1:${ports.mqtt}`,
        tls: { port: 0, cert: pem.server, key: pem.serverKey, ca: pem.ca, requestCert: true },
      }),
    );
    assert.ok(edgePorts.mqtts);
    const url = `mqtts://127.0.0.1:${edgePorts.mqtts}`;
    const device = await mqtt.connectAsync(
      url,
      {
        ca: pem.ca,
        ...ownCert('scan-t'),
        username: 'scan-t',
        password: 'pw-scanner-t',
        clientId: 'scan-t-tls',
        reconnectPeriod: 0,
      },
      false,
    );
    await device.publishAsync(
      `wh/${WH}/dev/scan-t/event`,
      JSON.stringify({ v: 1, id: 'tls-dev-1', type: 'received', sku: 'SKU-TD', qty: 1 }),
      { qos: 1 },
    );
    await device.endAsync();
    await assert.rejects(
      mqtt.connectAsync(
        url,
        {
          ca: pem.ca,
          username: 'scan-t',
          password: 'pw-scanner-t',
          clientId: 'scan-t-nocert',
          reconnectPeriod: 0,
          connectTimeout: 5_000,
        },
        false,
      ),
    );
    const line = await log.waitFor(refusal(/^NO_CERTIFICATE$/), 'the device refused for its missing certificate');
    assert.match(String(line.reason), /sent no certificate/);
  });
  /** SHA-256 fingerprint of the certificate a TLS listener presents to a new connection. */
  const servedCertificate = (port: number) =>
    new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...ownCert('scan-t') }, () => {
        resolve(socket.getPeerCertificate().fingerprint256);
        socket.destroy();
      });
      socket.once('error', reject);
    });
  const fingerprint = (pemCert: Buffer) => new X509Certificate(pemCert).fingerprint256;

  it('certificate rotation at central: new connections get the new certificate, open ones stay, and files OpenSSL refuses change nothing', async () => {
    const port = ports.mqtts as number;
    assert.equal(await servedCertificate(port), fingerprint(pem.server));
    const open = await mqtt.connectAsync(
      `mqtts://127.0.0.1:${port}`,
      {
        ca: pem.ca,
        ...ownCert('proc-t'),
        username: 'proc-t',
        password: 'pw-processor-t',
        clientId: 'proc-t-rotation',
        reconnectPeriod: 0,
      },
      false,
    );
    try {
      central.reloadTls({ cert: pem.wrongName, key: pem.wrongNameKey, ca: pem.ca });
      assert.equal(
        await servedCertificate(port),
        fingerprint(pem.wrongName),
        'a new connection gets the new certificate',
      );
      assert.throws(
        () => central.reloadTls({ cert: pem.server, key: pem.wrongNameKey, ca: pem.ca }),
        /key values mismatch|KEY_VALUES_MISMATCH/i,
      );
      assert.equal(
        await servedCertificate(port),
        fingerprint(pem.wrongName),
        'a refused rotation leaves the certificate in use',
      );
      // A round trip over it rather than a look after 200 ms: a connection closed by the rotations fails this.
      await open.subscribeAsync('wh/+/dev/+/event', { qos: 1 });
      assert.ok(open.connected, 'a connection opened before the rotation stays up');
    } finally {
      central.reloadTls({ cert: pem.server, key: pem.serverKey, ca: pem.ca });
      await open.endAsync();
    }
    assert.equal(await servedCertificate(port), fingerprint(pem.server));
  });

  it("the edge's credentials for central rotate for its next connection; the link that is up keeps its own", async () => {
    const proxy = new TcpProxy(ports.mqtts as number);
    const proxyPort = await proxy.start();
    stops.push(() => proxy.stop());
    const log = new CapturedLog();
    const { edge } = await startEdge(
      edgeOptions(log, 'edge-rotate', {
        centralUrl: `mqtts://127.0.0.1:${proxyPort}`,
        centralTls: { ca: pem.ca, ...ownCert(GW.username) },
      }),
    );
    try {
      await log.waitFor((l) => l.msg === 'connected to central', 'the link up');
      // pem.client is valid and from the trusted CA, but names gw-tls: central refuses it for this gateway, which shows it is the one used.
      edge.reloadTls({ central: { ca: pem.ca, cert: pem.client, key: pem.clientKey } });
      const from = centralLog.lines.length;
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await fetch(`http://127.0.0.1:${ports.http}/metrics`)).ok, true);
      assert.ok(
        !centralLog.lines.slice(from).some((l) => l.msg === 'connection refused'),
        'the link that is up is not touched',
      );
      proxy.cut();
      const refused = await centralLog.waitFor(
        (l) => l.msg === 'connection refused' && l.reason === 'certificate_identity',
        'the reconnect with the rotated certificate',
        15_000,
        from,
      );
      assert.equal(refused.subject, 'gw-tls');
      const connects = log.lines.filter((l) => l.msg === 'connected to central').length;
      edge.reloadTls({ central: { ca: pem.ca, ...ownCert(GW.username) } });
      await log.waitFor(
        () => log.lines.filter((l) => l.msg === 'connected to central').length > connects,
        'the link up again with its own certificate',
        15_000,
      );
    } finally {
      await edge.stop();
    }
  });

  it('stockwire central takes rotated certificate files on SIGHUP, and keeps the ones in use when the new files are bad', async () => {
    const dir = await fs.mkdtemp(path.join(certs.dir, 'sighup-'));
    const cert = path.join(dir, 'server.pem');
    const key = path.join(dir, 'server.key');
    await fs.writeFile(cert, pem.server);
    await fs.writeFile(key, pem.serverKey);
    const c = await startStockwire(
      [
        'central',
        '--host',
        '127.0.0.1',
        '--mqtt-port',
        '0',
        '--ws-port',
        '0',
        '--http-port',
        '0',
        '--tls-port',
        '0',
        '--tls-cert',
        cert,
        '--tls-key',
        key,
        '--tls-client-ca',
        certs.ca,
        '--devices-file',
        devices.file,
        '--data-dir',
        dir,
      ],
      { DATABASE_URL: db.url },
    );
    try {
      const port = c.ports.mqtts as number;
      assert.equal(await servedCertificate(port), fingerprint(pem.server));
      const logged = async (msg: string, after: number) => {
        for (let i = 0; i < 100; i++) {
          const line = c.logs.slice(after).find((l) => l.includes(`"msg":"${msg}"`));
          if (line) return line;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error(`no "${msg}" in central's log:\n${c.logs.slice(-10).join('\n')}`);
      };
      await fs.writeFile(cert, pem.wrongName);
      await fs.writeFile(key, pem.wrongNameKey);
      let mark = c.logs.length;
      c.child.kill('SIGHUP');
      await logged('TLS certificates reloaded', mark);
      assert.equal(await servedCertificate(port), fingerprint(pem.wrongName));

      await fs.writeFile(key, 'not a key\n');
      mark = c.logs.length;
      c.child.kill('SIGHUP');
      const line = await logged('TLS reload refused: the certificates in use stay', mark);
      assert.match(line, /tls-key|PEM|key/i, 'the log says which file and why');
      assert.doesNotMatch(line, /not a key/, 'never the file content');
      assert.equal(await servedCertificate(port), fingerprint(pem.wrongName), 'the certificate in use stays');
      assert.equal(c.child.exitCode, null, 'central is still running');
    } finally {
      c.child.kill('SIGTERM');
      await c.exited;
    }
  });
});
