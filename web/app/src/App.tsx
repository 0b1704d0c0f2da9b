import { useSyncExternalStore } from 'react';
import { AgentList } from './components/AgentList.js';
import { Conversation } from './components/Conversation.js';
import { ErrorText } from './components/ErrorText.js';
import { LoginScreen } from './components/LoginScreen.js';
import { StatusBar } from './components/StatusBar.js';
import type { Controller } from './controller.js';
// Emitted as a hashed asset (assets/favicon-<hash>.svg, cached immutable), never a data: URL.
import faviconUrl from './favicon.svg';

export function App({ controller }: { controller: Controller }) {
  const state = useSyncExternalStore(controller.subscribe, controller.getState);
  const selected = state.selected === undefined ? undefined : state.agents.find((a) => a.agent_id === state.selected);

  let content;
  if (state.phase === 'starting') {
    content = (
      <main className="centered" aria-busy="true">
        <p className="muted">Loading…</p>
      </main>
    );
  } else if (state.phase === 'login') {
    content = <LoginScreen controller={controller} state={state} />;
  } else if (state.phase === 'connecting') {
    content = (
      <main className="centered" aria-busy="true" data-testid="connecting">
        <p className="muted">Registering this browser as an agent…</p>
      </main>
    );
  } else if (state.phase === 'elsewhere') {
    content = (
      <main className="centered elsewhere" data-testid="elsewhere">
        <p role="status">This agent is open in another tab.</p>
        <button type="button" data-testid="use-here" onClick={() => void controller.useHere()}>
          Use it here
        </button>
      </main>
    );
  } else {
    content = (
      <div className="workspace">
        <AgentList controller={controller} state={state} />
        <Conversation key={state.selected ?? ''} controller={controller} state={state} agentId={state.selected} card={selected} />
      </div>
    );
  }

  return (
    <div className="app">
      <header className="topbar">
        <h1 className="brand">
          <img src={faviconUrl} alt="" width="22" height="22" />
          agent-mesh
        </h1>
        {state.me && (
          <div className="topbar-user">
            <span>
              Signed in as <strong data-testid="user-login">{state.me.user.login}</strong>
            </span>
            <button type="button" className="link" data-testid="logout" onClick={() => void controller.logout()}>
              Log out
            </button>
          </div>
        )}
      </header>
      {state.notice && state.phase === 'ready' && (
        <div className="notice" role="alert" data-testid="notice">
          <ErrorText error={state.notice} />
          <button type="button" className="link" onClick={() => controller.dismissNotice()} aria-label="Dismiss">
            Dismiss
          </button>
        </div>
      )}
      {content}
      <StatusBar state={state} />
    </div>
  );
}
