import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { addDevice } from '../../broker/index.js';

export interface TestDevice {
  id: string;
  warehouse: string;
  kind: 'scanner' | 'shelf' | 'display' | 'gateway' | 'processor';
  password: string;
}

/** Writes a devices file with the given credentials into a fresh temp folder. */
export async function writeDevices(devices: TestDevice[]): Promise<{ dir: string; file: string }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'stockwire-'));
  const file = path.join(dir, 'devices.json');
  for (const d of devices) await addDevice(file, d);
  return { dir, file };
}
