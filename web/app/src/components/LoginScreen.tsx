import { useId, useState, type FormEvent } from 'react';
import type { AppState, Controller } from '../controller.js';
import { ErrorText } from './ErrorText.js';

export function LoginScreen({ controller, state }: { controller: Controller; state: AppState }) {
  const [token, setToken] = useState('');
  const tokenId = useId();
  const hintId = useId();
  const submit = (event: FormEvent): void => {
    event.preventDefault();
    void controller.loginWithToken(token);
  };
  const device = state.device;
  return (
    <main className="centered">
      <section className="card login" aria-labelledby="login-title">
        <h2 id="login-title">Log in</h2>
        <p className="muted">
          This browser becomes an agent of your mesh: its key is made and kept here and never leaves it.
        </p>
        <form onSubmit={submit} noValidate>
          <label htmlFor={tokenId}>API token</label>
          <input
            id={tokenId}
            data-testid="login-token-input"
            type="password"
            autoComplete="off"
            spellCheck={false}
            value={token}
            onChange={(e) => setToken(e.target.value)}
            aria-describedby={hintId}
            disabled={state.loginBusy}
          />
          <p id={hintId} className="hint">
            For example the bootstrap token that <code>agent-mesh-server --bootstrap</code> or{' '}
            <code>mesh-demo --serve</code> prints.
          </p>
          <button type="submit" className="primary" data-testid="login-token-submit" disabled={state.loginBusy || token.trim() === ''}>
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
                  <a href={device.verificationUriComplete ?? device.verificationUri} target="_blank" rel="noreferrer noopener" data-testid="device-url">
                    {device.verificationUri}
                  </a>{' '}
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
          <p className="error" role="alert" data-testid="login-error">
            <ErrorText error={state.loginError} />
          </p>
        )}
      </section>
    </main>
  );
}
