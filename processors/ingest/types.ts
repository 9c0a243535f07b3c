import type {
  ErrorBody,
  GlobalStock,
  ShelfReading,
  StockEvent,
  TransferState,
  ValidationError,
  WarehouseStock,
} from '../../protocol/index.js';
import type { Notice } from '../publish/publisher.js';

/** One message as it reached the processor. */
export interface Delivery {
  topic: string;
  payload: Buffer;
  /** from the topic, never from the payload */
  wh: string;
  device: string;
  /** the authenticated client that delivered it (a device, a gateway) */
  source: string;
  receivedAt: number; // epoch ms
  /**
   * Forwarded by an edge (central authenticates it as a gateway): the edge applied the 5-minute rule of
   * CONTRACT 3 with its own clock and stamped its receipt time where it replaced or lacked `ts`, so the `ts`
   * it forwarded stands, unless it lies more than MAX_CLOCK_AHEAD_MS + EDGE_CLOCK_TOLERANCE_MS ahead of this clock.
   * Unset (a standalone processor cannot tell): the rule again here.
   */
  viaEdge?: boolean;
}

export type Parsed = { delivery: Delivery } & (
  | { ok: true; event: StockEvent }
  | { ok: false; error: ValidationError; id: string | null }
);

export type Decision =
  | { status: 'applied' | 'duplicate'; id: string; stock?: { onHand: number; available: number } }
  | { status: 'rejected'; id: string | null; error: ErrorBody };

export interface NegativeStock {
  wh: string;
  sku: string;
  onHand: number;
}

export interface DeadLetterNote {
  wh: string | null;
  device: string | null;
  code: string;
  reason: string;
  /** the sku the dead copy named, where it had one (a reused id) */
  sku?: string;
}

/** What one committed batch decided and changed; published only after the commit. */
export interface BatchResult {
  decisions: Decision[];
  warehouseStock: WarehouseStock[];
  globalStock: GlobalStock[];
  shelves: ShelfReading[];
  negative: NegativeStock[];
  deadLetters: DeadLetterNote[];
  /** events newly applied, for metrics: (type, wh, commit − event time) */
  applied: { type: StockEvent['type']; wh: string; lagMs: number }[];
  /** alerts about reservation and transfer links that did not fit (reservation-mismatch, transfer-mismatch) */
  notices: Notice[];
  /** transfers that reached a new state */
  transitions: { id: string; state: TransferState }[];
}
