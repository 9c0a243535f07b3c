/** True in CI (`CI=true`, as CI services set it), where nothing that needs a service may be skipped and every seed is fixed. */
export const IN_CI = /^(true|1)$/i.test(process.env.CI ?? '');
