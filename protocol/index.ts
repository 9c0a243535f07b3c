export * from './ids.js';
export * from './topics.js';
export * from './errors.js';
export * from './schemas.js';
export * from './event.js';
export * from './stamp.js';
export * from './api.js';
export * from './batch.js';
