/**
 * The one table of Kizuna error codes. Every error that reaches an app (on a reply topic),
 * an operator (in a log) or a user (from the CLI) carries one of these stable codes.
 * Codes are never renamed or reused; docs/PROTOCOL.md lists each one (a test checks that).
 */
export const ERROR_CODES = {
  KZ_ERR_MALFORMED: 'The payload is not valid JSON, a valid binary frame or a known image format',
  KZ_ERR_BAD_REQUEST: 'The request is well-formed but a field is missing or has the wrong type',
  KZ_ERR_BAD_TOPIC: 'The topic does not match kizuna/v1/<mesh>/req/<model>/<client>/<id>',
  KZ_ERR_BAD_NAME: 'A model, client or request id segment has a forbidden character or is too long',
  KZ_ERR_UNKNOWN_MODEL: 'No model of that name (and version) is loaded here',
  KZ_ERR_BAD_DTYPE: 'A tensor has a dtype the model does not accept, or an unknown dtype',
  KZ_ERR_BAD_SHAPE: 'A tensor shape is not a list of sizes, does not match the model input, or does not match its data length',
  KZ_ERR_MISSING_INPUT: 'A model input is missing from the request, or an unknown input was given',
  KZ_ERR_TOO_LARGE: 'The payload is larger than the configured limit',
  KZ_ERR_TOO_MANY_ELEMENTS: 'A tensor or batch has more elements than the configured limit',
  KZ_ERR_IMAGE_CORRUPT: 'The image could not be decoded',
  KZ_ERR_IMAGE_TOO_LARGE: 'The image has more pixels than the configured limit',
  KZ_ERR_NOT_IMAGE_MODEL: 'An image was sent to a model that has no image pre-processing',
  KZ_ERR_INFERENCE: 'The runtime failed while running the model',
  KZ_ERR_OVERLOADED: 'The agent queue is full; retry later with the same id',
  KZ_ERR_SHUTTING_DOWN: 'The agent is shutting down and accepts no new work; retry with the same id',
  KZ_ERR_TIMEOUT: 'No reply arrived in time (raised by clients, never sent by agents)',
  KZ_ERR_MODEL_INTEGRITY: 'A model file does not match the sha256 of its manifest, or the manifest is not signed by this mesh',
  KZ_ERR_MANIFEST: 'A model manifest is missing, unreadable or invalid',
  KZ_ERR_MODEL_LOAD: 'The runtime cannot load a model file (not ONNX, or an operator it lacks)',
  KZ_ERR_CONFIG: 'The configuration is invalid',
  KZ_ERR_UNAUTHORIZED: 'The credentials are missing, invalid, of another mesh, expired or revoked',
  KZ_ERR_FORBIDDEN: 'This identity may not publish or subscribe to that topic',
  KZ_ERR_INTERNAL: 'An unexpected error inside the agent; the agent goes on serving',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class KizunaError extends Error {
  override readonly name = 'KizunaError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

/** Any thrown value as a KizunaError, so nothing unexpected ever escapes without a code. */
export function asKizunaError(err: unknown): KizunaError {
  if (err instanceof KizunaError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new KizunaError('KZ_ERR_INTERNAL', message, { cause: err });
}
