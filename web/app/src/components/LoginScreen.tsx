import { useId, useRef, useState, type FormEvent } from 'react';
import { safeVerificationUri, type AppState, type Controller } from '../controller.js';
import { ErrorText } from './ErrorText.js';

export function LoginScreen({ controller, state }: { controller: Controller; state: AppState }) {
  // The token stays in the input (uncontrolled), never in React state: read once on submit.
  const tokenInput = useRef<HTMLInputElement>(null);
  const [empty, setEmpty] = useState(true);
  const tokenId = useId();
  const hintId = useId();
  const submit = (event: FormEvent): void => {
    event.preventDefault();
    const input = tokenInput.current;
    if (!input) return;
    const token = input.value;
    void controller.loginWithToken(token);
  };
  const device = state.device;
  // Only https (or the loopback stand-in of the tests) becomes a link; anything else is shown as text.
  const deviceHref = device
    ? [device.verificationUriComplete, device.verificationUri].find((uri) => safeVerificationUri(uri))
    : undefined;
  return (
    <main className="centered">
      <section className="card login" aria-labelledby="login-title">
        <h2 id="login-title">Log in</h2>
        <p className="muted">
          This browser becomes an agent of your mesh: its key is made and kept here and never leaves it.
        </p>
        <form onSubmit={submit} noValidate>
          <label htmlFor={tokenId}>API token</label>
          {/* A text field masked by CSS, not type=password: an API token is not a password for the
              browser's password manager to offer to save or fill in. */}
          <input
            ref={tokenInput}
            id={tokenId}
            data-testid="login-token-input"
            className="secret"
            type="text"
            name="agent-mesh-api-token"
            autoComplete="off"
            autoCapitalize="none"
            autoCorrect="off"
            spellCheck={false}
            data-1p-ignore="true"
            data-lpignore="true"
            data-bwignore="true"
            defaultValue=""
            onInput={(e) => setEmpty(e.currentTarget.value.trim() === '')}
            aria-describedby={hintId}
            disabled={state.loginBusy}
          />
          <p id={hintId} className="hint">
            For example the bootstrap token that <code>agent-mesh-server --bootstrap</code> or{' '}
            <code>mesh-demo --serve</code> prints.
          </p>
          <button type="submit" className="primary" data-testid="login-token-submit" disabled={state.loginBusy || empty}>
            {state.loginBusy && !device ? 'Logging in…' : 'Log in with token'}
          </button>
        </form>
        {state.info?.oauth && (
          <div className="device">
            <div className="or" aria-hidden="true">
              or
            </div>
            {device ? (
              <div data-testid="device-login" aria-live="polite">
                <p>
                  Open{' '}
                  {deviceHref !== undefined ? (
                    <a href={deviceHref} target="_blank" rel="noreferrer noopener" data-testid="device-url">
                      {device.verificationUri}
                    </a>
                  ) : (
                    <code className="agent-id" data-testid="device-url-text">
                      {device.verificationUri}
                    </code>
                  )}{' '}
                  and enter this code:
                </p>
                <p className="device-code" data-testid="device-code">
                  {device.userCode}
                </p>
                <p className="muted">Waiting for approval…</p>
                <button type="button" onClick={() => controller.cancelDeviceLogin()}>
                  Cancel
                </button>
              </div>
            ) : (
              <button type="button" data-testid="login-device-start" onClick={() => void controller.startDeviceLogin()} disabled={state.loginBusy}>
                Log in with GitHub
              </button>
            )}
          </div>
        )}
        {state.loginError && (
          <div className="error" role="alert" data-testid="login-error">
            <ErrorText error={state.loginError} />
            {state.keyRevoked && (
              <p>
                <button type="button" className="primary" data-testid="new-key" onClick={() => void controller.makeNewKey()} disabled={state.loginBusy}>
                  Make a new key
                </button>
              </p>
            )}
            {state.loginRetry && (
              <p>
                <button type="button" data-testid="login-retry" onClick={() => void controller.retry()} disabled={state.loginBusy}>
                  Try again
                </button>
              </p>
            )}
          </div>
        )}
      </section>
    </main>
  );
}
