export { createBroker, StockwireBroker, type AuthedClient, type BrokerOptions, type BrokerPorts, type DevicePublish } from './broker.js';
export {
  addDevice,
  DEVICE_KINDS,
  DeviceRegistry,
  DevicesFileError,
  hashPassword,
  isDeviceKind,
  isPasswordHash,
  loadDevices,
  verifyPassword,
  type Device,
  type DeviceKind,
  type NewDevice,
} from './devices.js';
export { isTopicFilter, isTopicName, mayConnect, mayPublish, mayRequest, maySubscribe, publishGrants, subscribeGrants, type BrokerRole } from './acl.js';
export type { TlsListenerOptions } from './listeners.js';
export type { ConnectionRefusal, PublishRefusal } from './metrics.js';
