import type { AgentCardResource } from '../../../client/src/registry.js';
import type { AppState, Controller } from '../controller.js';
import { shortId, timeOf } from '../format.js';
import { ErrorText } from './ErrorText.js';

function AgentItem({ card, controller, state }: { card: AgentCardResource; controller: Controller; state: AppState }) {
  const self = card.agent_id === state.agentId;
  const selected = state.selected === card.agent_id;
  const unread = state.unread[card.agent_id] ?? 0;
  const granted = controller.mayCall(card.agent_id);
  const granting = state.granting[`call:${card.agent_id}`] === true;
  // Names are chosen by whoever registered the card: isolated (<bdi>) and, for agents the user does
  // not own, never shown without the full ID.
  const owned = controller.owns(card.agent_id, card);
  return (
    <li
      className={`agent${selected ? ' selected' : ''}`}
      data-testid="agent-item"
      data-agent-id={card.agent_id}
      data-agent-name={card.name}
      data-online={card.online ? 'true' : 'false'}
    >
      <button
        type="button"
        className="agent-select"
        onClick={() => controller.select(card.agent_id)}
        aria-current={selected ? 'true' : undefined}
        data-testid="agent-select"
      >
        <span className="agent-line">
          <span className={`dot dot-${card.online ? 'online' : 'offline'}`} aria-hidden="true" />
          <span className="agent-name" data-testid="agent-name">
            <bdi>{card.name}</bdi>
          </span>
          {self && <span className="badge">this browser</span>}
          {unread > 0 && (
            <span className="badge badge-unread" data-testid="agent-unread" aria-label={`${unread} new`}>
              {unread}
            </span>
          )}
        </span>
        <span className="agent-meta">
          <span data-testid="agent-online">{card.online ? 'online' : 'offline'}</span>
          {' · '}
          <code className="agent-id" title={card.agent_id} data-testid="agent-id">
            {owned ? shortId(card.agent_id) : card.agent_id}
          </code>
        </span>
        <span className="chips" data-testid="agent-capabilities" aria-label="Capabilities">
          {card.capabilities.map((c) => (
            <span className="chip" key={c.name} title={c.description ?? c.name}>
              {c.name}
            </span>
          ))}
        </span>
      </button>
      {!self && controller.canGrant(card) && (
        <div className="agent-actions">
          {granted ? (
            <span className="granted" data-testid="access-granted">
              ✓ you may call it
            </span>
          ) : (
            <button
              type="button"
              className="small"
              data-testid="grant-access"
              disabled={granting || state.agentId === undefined}
              onClick={() => void controller.grantAccess(card)}
              aria-label={`Grant this browser access to ${card.name} (${owned ? shortId(card.agent_id) : card.agent_id})`}
            >
              {granting ? 'Granting…' : 'Grant access'}
            </button>
          )}
        </div>
      )}
    </li>
  );
}

export function AgentList({ controller, state }: { controller: Controller; state: AppState }) {
  // Agents that wrote to us but are not in discovery (e.g. deregistered) still get their conversation.
  const known = new Set(state.agents.map((a) => a.agent_id));
  const strangers = Object.keys(state.conversations).filter((id) => !known.has(id));
  const online = state.agents.filter((a) => a.online).length;
  return (
    <nav className="sidebar" aria-label="Agents">
      <div className="sidebar-head">
        <h2>Agents</h2>
        <span className="muted" data-testid="agent-count">
          {state.agentsLoaded ? `${online} of ${state.agents.length} online` : 'loading…'}
        </span>
      </div>
      {state.agentsError && (
        <p className="error" role="alert" data-testid="agents-stale">
          <ErrorText error={state.agentsError} />{' '}
          {state.agentsUpdatedAt !== undefined
            ? `The list below is from ${timeOf(state.agentsUpdatedAt)}: who is online may have changed since.`
            : 'The list could not be loaded; retrying.'}
        </p>
      )}
      <ul className={`agents${state.agentsError ? ' stale' : ''}`} data-testid="agent-list" data-stale={state.agentsError ? 'true' : 'false'}>
        {state.agents.map((card) => (
          <AgentItem key={card.agent_id} card={card} controller={controller} state={state} />
        ))}
        {strangers.map((id) => (
          <li key={id} className={`agent${state.selected === id ? ' selected' : ''}`} data-testid="agent-item" data-agent-id={id} data-online="unknown">
            <button type="button" className="agent-select" onClick={() => controller.select(id)} data-testid="agent-select">
              <span className="agent-line">
                <span className="agent-name">unknown agent</span>
                {(state.unread[id] ?? 0) > 0 && (
                  <span className="badge badge-unread" data-testid="agent-unread">
                    {state.unread[id]}
                  </span>
                )}
              </span>
              <span className="agent-meta">
                not in discovery · <code className="agent-id">{id}</code>
              </span>
            </button>
          </li>
        ))}
      </ul>
      {state.agentsLoaded && state.agents.length === 0 && !state.agentsError && <p className="muted">No agents in your groups yet.</p>}
    </nav>
  );
}
