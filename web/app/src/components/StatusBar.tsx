import { useState } from 'react';
import type { AppState } from '../controller.js';
import { shortId } from '../format.js';

const LINK_TEXT: Record<string, string> = {
  connecting: 'connecting',
  online: 'online',
  offline: 'offline',
  closed: 'closed',
};

export function StatusBar({ state }: { state: AppState }) {
  const [copied, setCopied] = useState(false);
  const link = state.phase === 'ready' ? state.link : undefined;
  const copy = (): void => {
    if (state.agentId === undefined) return;
    navigator.clipboard
      ?.writeText(state.agentId)
      .then(() => {
        setCopied(true);
        setTimeout(() => setCopied(false), 1500);
      })
      .catch(() => undefined);
  };
  return (
    <footer className="statusbar" data-testid="status-bar" aria-label="Status">
      <span className="status-item" role="status" aria-live="polite">
        Relay:{' '}
        <span className={`dot dot-${link?.state ?? 'none'}`} aria-hidden="true" />
        <span data-testid="status-link" data-state={link?.state ?? 'none'}>
          {link ? LINK_TEXT[link.state] : 'not connected'}
        </span>
        {link?.reason && link.state !== 'online' && <span className="muted"> ({link.reason})</span>}
      </span>
      <span className="status-item">
        Agent:{' '}
        {state.agentId ? (
          <>
            <code data-testid="status-agent-id" data-agent-id={state.agentId} title={state.agentId}>
              {shortId(state.agentId)}
            </code>{' '}
            <button type="button" className="link small" onClick={copy} aria-label="Copy this browser's agent ID">
              {copied ? 'copied' : 'copy'}
            </button>
          </>
        ) : (
          <span className="muted">none</span>
        )}
      </span>
      <span className="status-item">
        User: <span data-testid="status-user">{state.me?.user.login ?? '—'}</span>
      </span>
      <span className="status-item muted status-right">
        {state.info ? `registry ${state.info.version || ''}`.trim() : 'registry unreachable'}
      </span>
    </footer>
  );
}
