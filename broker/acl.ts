import { filterWithin, isIdent, topicMatches, topics, type RequestAction } from '../protocol/index.js';
import type { Device } from './devices.js';

/**
 * Access rules of CONTRACT section 5, as pure functions.
 * An edge broker serves one warehouse (`edgeWarehouse`); central serves all of them.
 */
export type BrokerRole = 'edge' | 'central';

/** May this device connect to a broker of this role (and, on an edge, this warehouse)? */
export function mayConnect(device: Device, role: BrokerRole, edgeWarehouse?: string): boolean {
  const ownEdge = role === 'edge' && edgeWarehouse !== undefined && edgeWarehouse === device.warehouse;
  switch (device.kind) {
    case 'scanner':
    case 'shelf':
      return ownEdge;
    case 'display':
      return ownEdge || role === 'central';
    case 'gateway':
    case 'processor':
      return role === 'central';
  }
}

// Ids go into grant patterns: one like `+` or `#` would widen the grant, so such a device gets none.
function hasValidIdentity(device: Device): boolean {
  return isIdent(device.id) && isIdent(device.warehouse);
}

/**
 * Topic patterns a device may publish to. Grants exist only on the role the device may connect to,
 * so a misconfigured edge or central still refuses.
 */
export function publishGrants(device: Device, role: BrokerRole): string[] {
  if (!hasValidIdentity(device)) return [];
  const wh = device.warehouse;
  switch (device.kind) {
    case 'scanner':
    case 'shelf':
      return role === 'edge' ? [`wh/${wh}/dev/${device.id}/event`] : [];
    case 'display':
      return [];
    case 'gateway':
      // requests/{own id}: reservation and transfer commands (README "Commands over MQTT"; a proposed CONTRACT addition)
      // its own batch topic only (CONTRACT 2): a batch names its gateway, so no credential speaks for another edge
      return role === 'central'
        ? [`wh/${wh}/dev/+/event`, `wh/${wh}/status`, topics.request(device.id), topics.batch(wh, device.id)]
        : [];
    case 'processor':
      // "under wh/": `wh/+/#` matches `wh/x` and deeper, but not `wh` itself as `wh/#` would
      return role === 'central' ? ['wh/+/#', 'stock/+/#', 'alerts/+/#', topics.request(device.id)] : [];
  }
}

/** Topic filters a device may subscribe to, or any filter within them. */
export function subscribeGrants(device: Device, role: BrokerRole): string[] {
  if (!hasValidIdentity(device)) return [];
  const wh = device.warehouse;
  switch (device.kind) {
    case 'scanner':
    case 'shelf':
      return role === 'edge'
        ? [`wh/${wh}/dev/${device.id}/ack`, `wh/${wh}/stock/#`, `wh/${wh}/shelf/#`, 'stock/#', `wh/${wh}/status`]
        : [];
    case 'display':
      // On central a display sees every warehouse; alerts too (its own warehouse's on an edge), since the
      // live display shows recent alerts — a read-only extension of CONTRACT section 5.
      return role === 'edge'
        ? [`wh/${wh}/stock/#`, `wh/${wh}/shelf/#`, `wh/${wh}/status`, 'stock/#', `alerts/${wh}/#`]
        : ['wh/+/stock/#', 'wh/+/shelf/#', 'wh/+/status', 'stock/#', 'alerts/#'];
    case 'gateway':
      // alerts/{own wh}/#: the edge mirrors its warehouse's alerts for its displays (a read-only extension of CONTRACT 5)
      return role === 'central'
        ? [
            `wh/${wh}/dev/+/ack`,
            `wh/${wh}/stock/#`,
            `wh/${wh}/shelf/#`,
            'stock/#',
            `alerts/${wh}/#`,
            `${topics.response(device.id)}/#`,
            topics.batchAck(wh, device.id),
          ]
        : [];
    case 'processor':
      return role === 'central' ? ['#'] : [];
  }
}

/** A concrete topic name: non-empty, no wildcards. */
export function isTopicName(topic: string): boolean {
  return topic.length > 0 && !topic.includes('+') && !topic.includes('#');
}

/** A well-formed filter (MQTT-4.7.1): `#` only as the whole last level, `+` only as a whole level. */
export function isTopicFilter(filter: string): boolean {
  if (filter.length === 0) return false;
  const levels = filter.split('/');
  return levels.every((level, i) => {
    if (level === '#') return i === levels.length - 1;
    if (level === '+') return true;
    return !level.includes('#') && !level.includes('+');
  });
}

/** May this device publish to `topic`? Nobody publishes to `$SYS/...` (or any `$` topic). */
export function mayPublish(device: Device, topic: string, role: BrokerRole): boolean {
  if (!isTopicName(topic) || topic.startsWith('$')) return false;
  return publishGrants(device, role).some((grant) => topicMatches(grant, topic));
}

/** May this device subscribe to `filter`? A filter wider than every grant is refused. */
export function maySubscribe(device: Device, filter: string, role: BrokerRole): boolean {
  if (!isTopicFilter(filter)) return false;
  return subscribeGrants(device, role).some((grant) => filterWithin(filter, grant));
}

/**
 * May this device make this command request over MQTT, on these warehouses? `warehouses` are those whose
 * stock the command acts on (a transfer's `from`: its hold is there), or both ends for `transfers.get`. A
 * `processor` credential (a trusted central service, e.g. an order system) may make every request; a
 * `gateway` only ones whose every warehouse is its own — it may read a transfer into its warehouse, never hold
 * or release another warehouse's stock — and no allocation across warehouses. Devices (scanners, shelves,
 * displays) make none.
 */
export function mayRequest(device: Device, action: RequestAction, warehouses: readonly string[]): boolean {
  if (!hasValidIdentity(device)) return false;
  switch (device.kind) {
    case 'processor':
      return true;
    case 'gateway':
      if (action === 'transfers.get') return warehouses.includes(device.warehouse);
      return warehouses.length > 0 && warehouses.every((wh) => wh === device.warehouse);
    default:
      return false;
  }
}
