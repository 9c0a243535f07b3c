import type { NodeAPI } from 'node-red';
import { registerMovements } from './movements.js';
import { registerReserve } from './reserve.js';
import { registerServer } from './server.js';
import { registerStockIn } from './stock-in.js';
import { registerStockLevel } from './stock-level.js';
import { registerSubmit } from './submit.js';
import { registerTransfer } from './transfer.js';

/** Node-RED loads this module and calls it with the runtime API: it registers every stockwire node. */
export = function stockwire(RED: NodeAPI): void {
  registerServer(RED);
  registerStockIn(RED);
  registerStockLevel(RED);
  registerSubmit(RED);
  registerReserve(RED);
  registerTransfer(RED);
  registerMovements(RED);
};
