export {
  createBroker,
  StockwireBroker,
  type AuthedClient,
  type BeforePuback,
  type BrokerOptions,
  type BrokerPorts,
  type DevicePublish,
} from './broker.js';
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
export {
  isTopicFilter,
  isTopicName,
  mayConnect,
  mayPublish,
  mayRequest,
  maySubscribe,
  publishGrants,
  subscribeGrants,
  type BrokerRole,
} from './acl.js';
export { orderedPublisher, type Publisher as BrokerPublisher } from './ordered-publisher.js';
export { deviceLimitConfigProblems, deviceLimitSpecs, deviceLimitsOf } from './config.js';
export {
  CONNECT_WINDOW_MS,
  DEFAULT_DEVICE_LIMITS,
  DISCONNECT_AFTER_BURSTS,
  isPublishLimited,
  type DeviceLimits,
} from './limits.js';
export type { TlsListenerOptions, TlsRefusal } from './listeners.js';
export type { ConnectionRefusal, PublishRefusal } from './metrics.js';
