/** A request the exporter refuses: answered with HTTP 400 and this message. */
export class BadRequestError extends Error {
  override readonly name = 'BadRequestError';
}

/** The probing engine cannot serve (its thread failed or it is stopping): HTTP 503. */
export class UnavailableError extends Error {
  override readonly name = 'UnavailableError';
}

/** A command line the exporter refuses to start with. */
export class FlagError extends Error {
  override readonly name: string = 'FlagError';
}

/** A target `-target-allow` does not allow: HTTP 403 and this message. */
export class ForbiddenError extends Error {
  override readonly name = 'ForbiddenError';
}

/** A request that would pass a limit (`-max-targets`): HTTP 429 and this message; it started nothing. */
export class LimitError extends Error {
  override readonly name = 'LimitError';
}
