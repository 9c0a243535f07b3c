import { int, type OptionSpec } from '../cli/options.js';
import { DEFAULT_DEVICE_LIMITS, type DeviceLimits } from './limits.js';

// Keeps each spec's literal type, so `default` makes the parsed value non-optional.
const opt = <S extends OptionSpec<unknown>>(spec: S): S => spec;
const d = DEFAULT_DEVICE_LIMITS;

/** The per-device limits as flags and environment variables: `stockwire edge` and `stockwire central` take them. */
export const deviceLimitSpecs = {
  devicePublishRate: opt({ flag: 'device-publish-rate', env: 'DEVICE_PUBLISH_RATE', help: 'publishes/s a scanner or shelf sensor may sustain; above it its PUBACKs are held back', parse: int(1, 10_000_000), default: d.publishRate }),
  devicePublishBurst: opt({ flag: 'device-publish-burst', env: 'DEVICE_PUBLISH_BURST', help: 'publishes a device may send at once above its rate; after 10x this many held back it is disconnected', parse: int(1, 10_000_000), default: d.publishBurst }),
  deviceMaxInflight: opt({ flag: 'device-max-inflight', env: 'DEVICE_MAX_INFLIGHT', help: 'QoS 1 publishes of one device awaiting their PUBACK at once; more wait their turn', parse: int(1, 1_000_000), default: d.maxInflight }),
  deviceConnectLimit: opt({ flag: 'device-connect-limit', env: 'DEVICE_CONNECT_LIMIT', help: 'connection attempts per client id per minute; more are refused (CONNACK 3)', parse: int(1, 1_000_000), default: d.connectsPerClientId }),
  addressConnectLimit: opt({ flag: 'address-connect-limit', env: 'ADDRESS_CONNECT_LIMIT', help: 'connection attempts per remote address per minute; more are refused (CONNACK 3)', parse: int(1, 1_000_000), default: d.connectsPerAddress }),
};

/** The broker's limits from parsed configuration values. */
export function deviceLimitsOf(c: { devicePublishRate: number; devicePublishBurst: number; deviceMaxInflight: number; deviceConnectLimit: number; addressConnectLimit: number }): DeviceLimits {
  return {
    publishRate: c.devicePublishRate,
    publishBurst: c.devicePublishBurst,
    maxInflight: c.deviceMaxInflight,
    connectsPerClientId: c.deviceConnectLimit,
    connectsPerAddress: c.addressConnectLimit,
  };
}
