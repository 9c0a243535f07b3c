import { logLevel, type LogLevel } from '../runtime/logger.js';
import { bool, fraction, int, list, oneOf, positive, str, url, opt } from '../runtime/options.js';
import { isIdent } from '../protocol/index.js';
import { parseMix } from './plan.js';

// Keeps each spec's literal type, so `default` makes the parsed value non-optional.

/** `WH1=mqtt://host:1885,WH2=…` */
const edgeList = (raw: string): Record<string, string> => {
  const out: Record<string, string> = {};
  const checkUrl = url('mqtt:', 'mqtts:', 'ws:', 'wss:');
  for (const part of list(raw)) {
    const i = part.indexOf('=');
    const wh = part.slice(0, i);
    if (i < 0 || !isIdent(wh))
      throw new Error(`must be a list like WH1=mqtt://127.0.0.1:1885,WH2=mqtt://… (bad entry ${JSON.stringify(part)})`);
    out[wh] = checkUrl(part.slice(i + 1));
  }
  return out;
};

const idents = (raw: string): string[] => {
  const items = list(raw);
  const bad = items.filter((w) => !isIdent(w));
  if (items.length === 0 || bad.length > 0) throw new Error('must be a comma-separated list of identifiers');
  return items;
};

const skuPrefix = (raw: string): string => {
  if (!/^[A-Za-z0-9._-]{0,48}$/.test(raw))
    throw new Error('must match ^[A-Za-z0-9._-]{0,48}$ (a sku is the prefix plus 3 digits)');
  return raw;
};

const faultList = (raw: string): string[] => {
  const names = ['duplicate', 'reorder', 'skew', 'malformed', 'disconnect'];
  const items = list(raw);
  if (items.length === 1 && (items[0] === 'all' || items[0] === 'none')) return items[0] === 'all' ? names : [];
  const bad = items.filter((f) => !names.includes(f));
  if (bad.length > 0 || items.length === 0) throw new Error(`must be all, none, or a list of ${names.join(', ')}`);
  return items;
};

export const simSpecs = {
  dataDir: opt({
    flag: 'data-dir',
    env: 'DATA_DIR',
    help: 'where a running demo keeps demo-credentials.json and demo-endpoints.json',
    parse: str,
    default: './data',
  }),
  credentials: opt({
    flag: 'credentials',
    env: 'SIM_CREDENTIALS',
    help: 'JSON array of {id,warehouse,kind,password}; default: DATA_DIR/demo-credentials.json',
    parse: str,
  }),
  edges: opt({
    flag: 'edges',
    env: 'SIM_EDGES',
    help: "edge per warehouse, WH1=mqtt://host:port,…; default: the running demo's",
    parse: edgeList,
  }),
  apiToken: opt({
    flag: 'api-token',
    env: 'API_TOKEN',
    help: "token for central's API reads, when it sets API_READ_TOKEN (--verify); default: DATA_DIR/api-token, if there",
    parse: str,
    secret: true,
  }),
  centralHttp: opt({
    flag: 'central-http',
    env: 'CENTRAL_HTTP',
    help: "central's HTTP API, for --verify; default: the running demo's",
    parse: url('http:', 'https:'),
  }),
  warehouses: opt({
    flag: 'warehouses',
    env: 'SIM_WAREHOUSES',
    help: 'simulate only these warehouses; default: every one with an edge',
    parse: idents,
  }),
  scanners: opt({
    flag: 'scanners',
    env: 'SIM_SCANNERS',
    help: 'scanners per warehouse; default: every scanner credential',
    parse: int(0, 10_000),
  }),
  shelves: opt({
    flag: 'shelves',
    env: 'SIM_SHELVES',
    help: 'shelf sensors per warehouse; default: every shelf credential',
    parse: int(0, 10_000),
  }),
  rate: opt({
    flag: 'rate',
    env: 'SIM_RATE',
    help: 'events per second, all devices together',
    parse: positive(100_000),
    default: 20,
  }),
  duration: opt({
    flag: 'duration',
    env: 'SIM_DURATION',
    help: 'seconds to run; with neither this nor --count: until Ctrl-C',
    parse: positive(31 * 24 * 3600),
  }),
  count: opt({
    flag: 'count',
    env: 'SIM_COUNT',
    help: 'events to send (duplicates not counted), then stop',
    parse: int(0, 1_000_000_000),
  }),
  seed: opt({
    flag: 'seed',
    env: 'SIM_SEED',
    help: 'seed of the random choices; default: a new one, printed',
    parse: int(0, 2 ** 31 - 1),
  }),
  skus: opt({ flag: 'skus', env: 'SIM_SKUS', help: 'skus per warehouse', parse: int(1, 100_000), default: 20 }),
  skuPrefix: opt({
    flag: 'sku-prefix',
    env: 'SIM_SKU_PREFIX',
    help: 'skus are PREFIX001…; default: sim-<run id>- (new each run, so --verify owns its skus)',
    parse: skuPrefix,
  }),
  mix: opt({
    flag: 'mix',
    env: 'SIM_MIX',
    help: 'event type weights, e.g. received=25,shipped=35,returned=4,adjusted=6,counted=5,level=25 (the default)',
    parse: parseMix,
  }),
  faults: opt({
    flag: 'faults',
    env: 'SIM_FAULTS',
    help: 'turn faults on at their rates in brackets below: all, or some of duplicate,reorder,skew,malformed,disconnect',
    parse: faultList,
  }),
  duplicate: opt({
    flag: 'duplicate',
    env: 'SIM_DUPLICATE',
    help: 'share of events published twice (0–1) [0.05]',
    parse: fraction,
  }),
  reorder: opt({
    flag: 'reorder',
    env: 'SIM_REORDER',
    help: 'share of events held back 0.2–3 s, arriving out of order [0.1]',
    parse: fraction,
  }),
  skew: opt({
    flag: 'skew',
    env: 'SIM_SKEW',
    help: 'share of events with a wrong or absent clock: hours behind, minutes or days ahead [0.1]',
    parse: fraction,
  }),
  malformed: opt({
    flag: 'malformed',
    env: 'SIM_MALFORMED',
    help: 'share of payloads central must reject [0.03]',
    parse: fraction,
  }),
  disconnectEvery: opt({
    flag: 'disconnect-every',
    env: 'SIM_DISCONNECT_EVERY',
    help: 'each device drops its connection on average every N s [15]',
    parse: positive(86_400),
  }),
  verify: opt({
    flag: 'verify',
    env: 'SIM_VERIFY',
    help: 'at the end, wait until central committed everything and compare its stock with what was sent; exit 1 on any difference',
    parse: bool,
    boolean: true,
    default: false,
  }),
  verifyTimeout: opt({
    flag: 'verify-timeout',
    env: 'SIM_VERIFY_TIMEOUT',
    help: 'seconds --verify waits for the edges and central',
    parse: positive(3600),
    default: 60,
  }),
  clockTolerance: opt({
    flag: 'clock-tolerance',
    env: 'SIM_CLOCK_TOLERANCE',
    help: "ms by which this machine's clock and the edges' may differ (--verify orders edge-stamped events with it)",
    parse: int(0, 60_000),
    default: 2_000,
  }),
  format: opt({
    flag: 'format',
    env: 'SIM_FORMAT',
    help: 'summary on stdout: text or json',
    parse: oneOf('text', 'json'),
    default: 'text' as 'text' | 'json',
  }),
  logLevel: opt({
    flag: 'log-level',
    env: 'LOG_LEVEL',
    help: 'pino level',
    parse: logLevel,
    default: 'warn' as LogLevel,
  }),
};
