import type { ShownError } from '../controller.js';

/** An error as people read it: the stable code, then what went wrong. */
export function ErrorText({ error, testId }: { error: ShownError; testId?: string }) {
  return (
    <span className="error-text" data-testid={testId} data-code={error.code}>
      <code className="error-code">{error.code}</code> {error.message}
    </span>
  );
}
