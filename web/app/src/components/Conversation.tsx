import { memo, useEffect, useId, useRef, useState, type FormEvent, type KeyboardEvent, type RefObject } from 'react';
import type { AgentCardResource } from '../../../client/src/registry.js';
import type { AppState, Controller, IncomingItem, OutgoingItem } from '../controller.js';
import { composeBody, shortId, timeOf, type ShownBody } from '../format.js';
import { ErrorText } from './ErrorText.js';

/** Enter sends, Shift+Enter is a new line; Enter that ends an IME composition sends nothing. */
function isSendKey(event: KeyboardEvent<HTMLTextAreaElement>): boolean {
  // keyCode 229: the key went to the IME (Safari reports isComposing false on the last Enter).
  return event.key === 'Enter' && !event.shiftKey && !event.nativeEvent.isComposing && event.nativeEvent.keyCode !== 229;
}

const Body = memo(function Body({ body, testId }: { body: ShownBody | undefined; testId?: string }) {
  if (body === undefined) return null;
  return body.json ? (
    <pre className="body json" data-testid={testId}>
      {body.text}
    </pre>
  ) : (
    <p className="body" data-testid={testId}>
      {body.text}
    </p>
  );
});

/** Seconds left, for eyes only: screen readers get one fixed sentence, not a tick every second. */
function Countdown({ deadline }: { deadline: number }) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  const left = Math.max(0, Math.ceil((deadline - now) / 1000));
  return (
    <span className="muted" data-testid="incoming-countdown">
      <span aria-hidden="true">answer within {left} s</span>
      <span className="visually-hidden">answer by {timeOf(deadline)}</span>
    </span>
  );
}

const Outgoing = memo(function Outgoing({ item, controller }: { item: OutgoingItem; controller: Controller }) {
  const hiddenChunks = item.chunkCount - item.chunks.length;
  return (
    <li className="exchange" data-testid="exchange" data-status={item.status}>
      <div className="bubble mine" data-testid="message-out">
        <div className="bubble-head">
          <span>
            You → <code>{item.capability}</code> ({item.mode})
          </span>
          <time>{timeOf(item.at)}</time>
        </div>
        <Body body={item.body} />
      </div>
      <div className="bubble theirs" data-testid="message-reply" data-status={item.status}>
        {hiddenChunks > 0 && (
          <p className="muted" data-testid="chunks-hidden">
            {hiddenChunks} earlier {hiddenChunks === 1 ? 'chunk' : 'chunks'} hidden
          </p>
        )}
        {item.mode === 'stream' && item.chunks.length > 0 && (
          <ol className="chunks" aria-label="Streamed chunks" start={hiddenChunks + 1}>
            {item.chunks.map((chunk, n) => (
              <li key={hiddenChunks + n} data-testid="reply-chunk">
                <Body body={chunk} />
              </li>
            ))}
          </ol>
        )}
        {item.status === 'pending' && (
          <p className="muted">
            Waiting for the answer…{' '}
            <button type="button" className="link small" onClick={() => controller.cancel(item.id)}>
              Cancel
            </button>
          </p>
        )}
        {item.status === 'streaming' && (
          <p className="muted">
            Streaming…{' '}
            <button type="button" className="link small" onClick={() => controller.cancel(item.id)}>
              Cancel
            </button>
          </p>
        )}
        {item.status === 'done' && item.mode === 'request' && <Body body={item.response} testId="reply-body" />}
        {item.status === 'done' && item.mode === 'stream' && (
          <p className="muted" data-testid="stream-end">
            Stream ended after {item.chunkCount} {item.chunkCount === 1 ? 'chunk' : 'chunks'}.
          </p>
        )}
        {item.status === 'cancelled' && <p className="muted">Cancelled.</p>}
        {item.status === 'error' && item.error && (
          <p className="error" role="alert">
            <ErrorText error={item.error} testId="message-error" />
          </p>
        )}
      </div>
    </li>
  );
});

const Incoming = memo(function Incoming({
  item,
  controller,
  composerRef,
  fromName,
  fromOwned,
}: {
  item: IncomingItem;
  controller: Controller;
  composerRef: RefObject<HTMLTextAreaElement | null>;
  fromName: string | undefined;
  fromOwned: boolean;
}) {
  const [text, setText] = useState('');
  const inputId = useId();
  const send = (event?: FormEvent): void => {
    event?.preventDefault();
    if (text.trim() === '') return;
    // The answer form goes away: keep the keyboard in the conversation.
    if (controller.reply(item.from, item.id, text)) composerRef.current?.focus();
  };
  const onKey = (event: KeyboardEvent<HTMLTextAreaElement>): void => {
    if (isSendKey(event)) {
      event.preventDefault();
      send();
    }
  };
  return (
    <li className="exchange" data-testid="incoming" data-status={item.status}>
      <div className="bubble theirs" data-testid="incoming-message">
        <div className="bubble-head">
          <span>
            {fromName !== undefined && (
              <>
                <bdi>{fromName}</bdi>{' '}
              </>
            )}
            <code className="agent-id" title={item.from}>
              {fromOwned ? shortId(item.from) : item.from}
            </code>{' '}
            → you (<code>{item.capability}</code>)
          </span>
          <time>{timeOf(item.at)}</time>
        </div>
        <Body body={item.body} testId="incoming-body" />
      </div>
      {item.status === 'waiting' && (
        <form className="reply-form" onSubmit={send}>
          <label htmlFor={inputId} className="visually-hidden">
            Your answer
          </label>
          <textarea
            id={inputId}
            data-testid="incoming-reply-input"
            rows={2}
            value={text}
            placeholder="Your answer…"
            onChange={(e) => setText(e.target.value)}
            onKeyDown={onKey}
          />
          <div className="reply-actions">
            <Countdown deadline={item.deadline} />
            <button type="submit" className="primary" data-testid="incoming-reply-send" disabled={text.trim() === ''}>
              Answer
            </button>
          </div>
        </form>
      )}
      {item.status === 'answered' && (
        <div className="bubble mine" data-testid="incoming-answer">
          <p className="body">{item.reply}</p>
        </div>
      )}
      {item.status === 'timeout' && (
        <p className="error" role="alert">
          <ErrorText error={{ code: 'timeout', message: 'not answered within 60 s; the sender was told so' }} />
        </p>
      )}
      {item.status === 'cancelled' && <p className="muted">The sender stopped waiting.</p>}
    </li>
  );
});

function Composer({
  agentId,
  card,
  controller,
  online,
  inputRef,
}: {
  agentId: string;
  card: AgentCardResource | undefined;
  controller: Controller;
  online: boolean;
  inputRef: RefObject<HTMLTextAreaElement | null>;
}) {
  const capabilities = card?.capabilities.map((c) => c.name) ?? ['chat'];
  const [capability, setCapability] = useState(capabilities.includes('chat') ? 'chat' : (capabilities[0] ?? 'chat'));
  const [mode, setMode] = useState<'request' | 'stream'>('request');
  const [asJson, setAsJson] = useState(false);
  const [text, setText] = useState('');
  const [error, setError] = useState<string | undefined>();
  const ids = { text: useId(), capability: useId(), json: useId(), error: useId() };
  // The conversation's agent, whether or not discovery lists it (one that wrote to us, say).
  const target = agentId;

  const send = (event?: FormEvent): void => {
    event?.preventDefault();
    if (text.trim() === '') return;
    const composed = composeBody(text, asJson);
    if ('error' in composed) {
      setError(composed.error);
      return;
    }
    setError(undefined);
    setText('');
    void controller.send(target, capability, mode, composed.body);
  };
  const onKey = (event: KeyboardEvent<HTMLTextAreaElement>): void => {
    if (isSendKey(event)) {
      event.preventDefault();
      send();
    }
  };
  return (
    <form className="composer" onSubmit={send} aria-label="Send a message">
      <div className="composer-options">
        <label htmlFor={ids.capability}>Capability</label>
        <select id={ids.capability} data-testid="composer-capability" value={capability} onChange={(e) => setCapability(e.target.value)}>
          {capabilities.map((c) => (
            <option key={c} value={c}>
              {c}
            </option>
          ))}
        </select>
        <fieldset className="segmented">
          <legend className="visually-hidden">Mode</legend>
          <label>
            <input type="radio" name="mode" value="request" data-testid="composer-mode-request" checked={mode === 'request'} onChange={() => setMode('request')} />
            Request
          </label>
          <label>
            <input type="radio" name="mode" value="stream" data-testid="composer-mode-stream" checked={mode === 'stream'} onChange={() => setMode('stream')} />
            Stream
          </label>
        </fieldset>
        <label className="checkbox" htmlFor={ids.json}>
          <input id={ids.json} type="checkbox" data-testid="composer-json" checked={asJson} onChange={(e) => setAsJson(e.target.checked)} />
          Body is JSON
        </label>
        {!online && <span className="muted">offline: the relay keeps requests for a while</span>}
      </div>
      <div className="composer-main">
        <label htmlFor={ids.text} className="visually-hidden">
          Message
        </label>
        <textarea
          ref={inputRef}
          id={ids.text}
          data-testid="composer-input"
          rows={2}
          value={text}
          placeholder={asJson ? '{"message": "hello"}' : 'Message… (Enter sends, Shift+Enter for a new line)'}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={onKey}
          aria-describedby={error ? ids.error : undefined}
          aria-invalid={error ? true : undefined}
          className={asJson ? 'mono' : undefined}
        />
        <button type="submit" className="primary" data-testid="composer-send" disabled={text.trim() === ''}>
          Send
        </button>
      </div>
      {error && (
        <p id={ids.error} className="error" role="alert" data-testid="composer-error">
          {error}
        </p>
      )}
      <p className="hint">
        Sent end-to-end encrypted as {asJson ? 'the JSON body' : <code>{'{"message": …}'}</code>}.
      </p>
    </form>
  );
}

export function Conversation({
  controller,
  state,
  agentId,
  card,
}: {
  controller: Controller;
  state: AppState;
  agentId: string | undefined;
  card: AgentCardResource | undefined;
}) {
  const conversation = agentId === undefined ? undefined : state.conversations[agentId];
  const items = conversation?.items ?? [];
  const hidden = conversation?.hidden ?? 0;
  const log = useRef<HTMLOListElement>(null);
  const composerRef = useRef<HTMLTextAreaElement>(null);
  const last = items[items.length - 1];
  const lastKey = last ? `${last.id}:${last.status}:${last.kind === 'out' ? last.chunkCount : 0}:${items.length}` : '';
  useEffect(() => {
    const el = log.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [lastKey]);

  if (agentId === undefined) {
    return (
      <main className="conversation empty" data-testid="conversation-empty">
        <p className="muted">Choose an agent to talk to. Messages are end-to-end encrypted in this browser.</p>
      </main>
    );
  }
  const self = agentId === state.agentId;
  const owned = controller.owns(agentId, card);
  const mayCall = controller.mayCall(agentId);
  const allowed = card?.capabilities.map((c) => c.name).filter((c) => controller.mayCall(agentId, c)) ?? [];
  const canGrant = card !== undefined && controller.canGrant(card);
  const chatsWithMe = controller.mayChatWithMe(agentId);
  const chatActive = controller.chatActive(agentId);
  return (
    <main className="conversation" data-testid="conversation" data-agent-id={agentId} aria-labelledby="conversation-title">
      <header className="conversation-head">
        <div>
          <h2 id="conversation-title">
            {card ? <bdi>{card.name}</bdi> : <code className="agent-id">{owned ? shortId(agentId) : agentId}</code>}{' '}
            <span className={`dot dot-${card?.online ? 'online' : 'offline'}`} aria-hidden="true" />
            <span className="muted small-text">{card ? (card.online ? 'online' : 'offline') : 'unknown'}</span>
          </h2>
          <p className="muted small-text">
            <code className="agent-id">{agentId}</code>
          </p>
          {card?.description && (
            <p className="small-text">
              <bdi>{card.description}</bdi>
            </p>
          )}
        </div>
        {!self && (
          <div className="access small-text" data-testid="access">
            <p>
              {mayCall ? (
                <>
                  You may call: {allowed.length > 0 ? allowed.map((c) => <code key={c}>{c} </code>) : <code>*</code>}
                </>
              ) : canGrant ? (
                'No rule lets this browser call it yet: grant access in the list.'
              ) : (
                'No rule lets this browser call it; its owner can grant access.'
              )}
            </p>
            {chatsWithMe ? (
              <p data-testid="chat-allowed" data-active={chatActive ? 'true' : 'false'}>
                It may send you chat messages{chatActive ? '.' : ' (taking effect…)'}
              </p>
            ) : (
              canGrant && (
                <button
                  type="button"
                  className="small"
                  data-testid="allow-chat"
                  disabled={state.granting[`chat:${agentId}`] === true}
                  onClick={() => card && void controller.allowChat(card)}
                >
                  Let it chat with me
                </button>
              )
            )}
          </div>
        )}
      </header>
      <ol className="log" ref={log} role="log" aria-live="polite" aria-label="Conversation" data-testid="conversation-log">
        {hidden > 0 && (
          <li className="muted placeholder" data-testid="messages-hidden">
            {hidden} earlier {hidden === 1 ? 'message' : 'messages'} hidden
          </li>
        )}
        {items.length === 0 && hidden === 0 && <li className="muted placeholder">No messages yet.</li>}
        {items.map((item) =>
          item.kind === 'out' ? (
            <Outgoing key={item.id} item={item} controller={controller} />
          ) : (
            <Incoming
              key={item.id}
              item={item}
              controller={controller}
              composerRef={composerRef}
              fromName={card?.name}
              fromOwned={owned}
            />
          ),
        )}
      </ol>
      {self ? (
        <p className="muted composer-note">This is this browser's own agent: other agents' chat messages arrive in their conversations.</p>
      ) : (
        <Composer agentId={agentId} card={card} controller={controller} online={card?.online ?? false} inputRef={composerRef} />
      )}
    </main>
  );
}
