import { addDevice, DEVICE_KINDS, DevicesFileError } from '../broker/index.js';
import { configure, EXIT_USAGE } from '../runtime/run.js';
import { str } from '../runtime/options.js';

export const devicesAddSpecs = {
  file: {
    flag: 'file',
    env: 'DEVICES_FILE',
    help: 'devices file (created if absent)',
    parse: str,
    required: true as const,
  },
  id: { flag: 'id', help: 'device id, also its MQTT username', parse: str, required: true as const },
  warehouse: { flag: 'warehouse', help: 'warehouse the device belongs to', parse: str, required: true as const },
  kind: { flag: 'kind', help: `one of ${DEVICE_KINDS.join(', ')}`, parse: str, required: true as const },
  password: {
    flag: 'password',
    env: 'DEVICE_PASSWORD',
    help: 'its password (stored as a scrypt hash)',
    parse: str,
    required: true as const,
    secret: true,
  },
};

/** `stockwire devices add --file --id --warehouse --kind --password` */
export async function runDevices(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub !== 'add') {
    const help = sub === undefined || sub === '--help' || sub === '-h';
    (help ? process.stdout : process.stderr).write(
      'Usage: stockwire devices add --file F --id ID --warehouse WH --kind KIND --password PW\n',
    );
    process.exitCode = help ? 0 : EXIT_USAGE;
    return;
  }
  const c = configure('devices add', 'Add a device or gateway credential to a devices file.', devicesAddSpecs, rest);
  if (!c) return;
  try {
    await addDevice(c.file, { id: c.id, warehouse: c.warehouse, kind: c.kind, password: c.password });
    process.stdout.write(`added ${c.kind} ${c.id} of ${c.warehouse} to ${c.file}\n`);
  } catch (err) {
    if (!(err instanceof DevicesFileError)) throw err;
    process.stderr.write(`stockwire devices add: ${err.message}\n`);
    process.exitCode = EXIT_USAGE;
  }
}
