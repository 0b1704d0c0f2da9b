// The Noise Protocol Framework (revision 34) for Noise_*_25519_ChaChaPoly_BLAKE2b on @noble.
//
// Generic over the twelve interactive fundamental patterns (Noise §7.4), each checked against its
// cacophony vector; only IK travels on the wire (protocol §5). Pure: no I/O; ephemeral keys come
// from WebCrypto's CSPRNG (through @noble) unless a test fixes them.
//
// Errors: hostile input and misuse fail with MeshError('bad_request') naming the problem; any
// failure ends a handshake for good (every later call fails too).
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { blake2b } from '@noble/hashes/blake2.js';
import { hmac } from '@noble/hashes/hmac.js';

import { concatBytes } from './bytes.js';
import { MeshError } from './errors.js';

export const KEY_BYTES = 32;
export const HASH_BYTES = 64; // BLAKE2b-512
export const TAG_BYTES = 16;
export const DH_BYTES = 32;
/** Noise §3: no message is longer than this. */
export const MAX_MESSAGE_BYTES = 65535;
/** The largest plaintext of one transport message: 65,535 − 16. */
export const MAX_PLAINTEXT_BYTES = MAX_MESSAGE_BYTES - TAG_BYTES;
/** Nonce 2^64−1 is reserved (Noise §5.1). */
export const MAX_NONCE = 2n ** 64n - 2n;

const EMPTY = new Uint8Array(0);

function noiseError(message: string): MeshError {
  return new MeshError('bad_request', message);
}

function isAllZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (const byte of bytes) acc |= byte;
  return acc === 0;
}

// ---- DH (§4.1, §12.1) ----

/** An X25519 key pair. */
export interface DhKeyPair {
  readonly secretKey: Uint8Array;
  readonly publicKey: Uint8Array;
}

export function generateDhKeyPair(): DhKeyPair {
  const { secretKey, publicKey } = x25519.keygen();
  return { secretKey, publicKey };
}

export function dhKeyPairFromSecret(secretKey: Uint8Array): DhKeyPair {
  if (secretKey.length !== DH_BYTES) throw noiseError(`an X25519 secret key is 32 bytes, not ${secretKey.length}`);
  return { secretKey: Uint8Array.from(secretKey), publicKey: x25519.getPublicKey(secretKey) };
}

/** DH(keyPair, publicKey). Throws when the result is all zeros (a low-order point; protocol §1). */
export function dh(local: DhKeyPair, remotePublic: Uint8Array): Uint8Array {
  let shared: Uint8Array;
  try {
    shared = x25519.getSharedSecret(local.secretKey, remotePublic);
  } catch {
    // @noble refuses low-order points (their result would be all zeros) and malformed keys.
    throw noiseError('all-zero DH (low-order key)');
  }
  if (isAllZero(shared)) throw noiseError('all-zero DH (low-order key)');
  return shared;
}

// ---- hash functions (§4.3, §12.8) ----

function hash(...parts: Uint8Array[]): Uint8Array {
  const h = blake2b.create({ dkLen: HASH_BYTES });
  for (const part of parts) h.update(part);
  return h.digest();
}

function hmacHash(key: Uint8Array, ...data: Uint8Array[]): Uint8Array {
  const mac = hmac.create(blake2b, key);
  for (const part of data) mac.update(part);
  return mac.digest();
}

/** HKDF(chainingKey, inputKeyMaterial, numOutputs) of Noise §4.3, with 2 or 3 outputs. */
function hkdf(chainingKey: Uint8Array, ikm: Uint8Array, outputs: 2 | 3): Uint8Array[] {
  const tempKey = hmacHash(chainingKey, ikm);
  const first = hmacHash(tempKey, Uint8Array.of(1));
  const second = hmacHash(tempKey, first, Uint8Array.of(2));
  if (outputs === 2) return [first, second];
  const third = hmacHash(tempKey, second, Uint8Array.of(3));
  return [first, second, third];
}

/** §12.3: 32 bits of zeros followed by the little-endian encoding of the counter. */
export function chachaPolyNonce(counter: bigint | number): Uint8Array {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, BigInt(counter), true);
  return nonce;
}

// ---- CipherState (§5.1) ----

/**
 * Holds k and n. `encryptWithAd`/`decryptWithAd` use and advance the internal nonce (handshake
 * phase); the `*At` forms take an explicit counter and leave the state alone (agent-mesh transport
 * messages carry their counter, protocol §5).
 */
export class CipherState {
  #key: Uint8Array | undefined;
  #nonce = 0n;

  constructor(key?: Uint8Array) {
    this.initializeKey(key);
  }

  initializeKey(key: Uint8Array | undefined): void {
    if (key !== undefined && key.length !== KEY_BYTES) throw noiseError(`a cipher key is 32 bytes, not ${key.length}`);
    this.#key = key === undefined ? undefined : Uint8Array.from(key);
    this.#nonce = 0n;
  }

  hasKey(): boolean {
    return this.#key !== undefined;
  }

  get nonce(): bigint {
    return this.#nonce;
  }

  setNonce(nonce: bigint): void {
    this.#nonce = nonce;
  }

  /** The plaintext unchanged when there is no key. */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.#key === undefined) return Uint8Array.from(plaintext);
    if (this.#nonce > MAX_NONCE) throw noiseError('nonce exhausted');
    if (plaintext.length > MAX_PLAINTEXT_BYTES) {
      throw noiseError(`plaintext of ${plaintext.length} bytes is longer than ${MAX_PLAINTEXT_BYTES}`);
    }
    const out = this.encryptAt(this.#nonce, ad, plaintext);
    this.#nonce += 1n;
    return out;
  }

  /** Throws on authentication failure; the nonce advances only on success. */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.#key === undefined) return Uint8Array.from(ciphertext);
    if (this.#nonce > MAX_NONCE) throw noiseError('nonce exhausted');
    if (ciphertext.length < TAG_BYTES) {
      throw noiseError(`ciphertext of ${ciphertext.length} bytes is shorter than a 16-byte tag`);
    }
    if (ciphertext.length > MAX_MESSAGE_BYTES) {
      throw noiseError(`ciphertext of ${ciphertext.length} bytes is longer than ${MAX_MESSAGE_BYTES}`);
    }
    const out = this.decryptAt(this.#nonce, ad, ciphertext);
    if (out === undefined) throw noiseError('authentication failed (bad tag)');
    this.#nonce += 1n;
    return out;
  }

  /** Explicit-nonce AEAD. Misuse (no key, reserved nonce, plaintext too long) throws. */
  encryptAt(nonce: bigint | number, ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.#key === undefined) throw noiseError('CipherState.encryptAt without a key');
    const n = BigInt(nonce);
    if (n < 0n || n > MAX_NONCE) throw noiseError('CipherState.encryptAt with a reserved or negative nonce');
    if (plaintext.length > MAX_PLAINTEXT_BYTES) throw noiseError('CipherState.encryptAt: plaintext too long');
    return chacha20poly1305(this.#key, chachaPolyNonce(n), ad).encrypt(plaintext);
  }

  /**
   * Undefined when the tag does not verify, the ciphertext is shorter than a tag or longer than
   * 65,535 bytes, or the nonce is out of range (hostile input fails quietly).
   */
  decryptAt(nonce: bigint | number, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array | undefined {
    if (this.#key === undefined) throw noiseError('CipherState.decryptAt without a key');
    const n = BigInt(nonce);
    if (ciphertext.length < TAG_BYTES || ciphertext.length > MAX_MESSAGE_BYTES || n < 0n || n > MAX_NONCE) {
      return undefined;
    }
    try {
      return chacha20poly1305(this.#key, chachaPolyNonce(n), ad).decrypt(ciphertext);
    } catch {
      return undefined;
    }
  }
}

// ---- SymmetricState (§5.2) ----

export class SymmetricState {
  readonly #cipher = new CipherState();
  #ck: Uint8Array;
  #h: Uint8Array;

  constructor(protocolName: string) {
    const name = new TextEncoder().encode(protocolName);
    if (name.length <= HASH_BYTES) {
      this.#h = new Uint8Array(HASH_BYTES);
      this.#h.set(name);
    } else {
      this.#h = hash(name);
    }
    this.#ck = Uint8Array.from(this.#h);
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, tempKey] = hkdf(this.#ck, ikm, 2) as [Uint8Array, Uint8Array];
    this.#ck = ck;
    this.#cipher.initializeKey(tempKey.subarray(0, KEY_BYTES));
  }

  mixHash(data: Uint8Array): void {
    this.#h = hash(this.#h, data);
  }

  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, tempHash, tempKey] = hkdf(this.#ck, ikm, 3) as [Uint8Array, Uint8Array, Uint8Array];
    this.#ck = ck;
    this.mixHash(tempHash);
    this.#cipher.initializeKey(tempKey.subarray(0, KEY_BYTES));
  }

  get handshakeHash(): Uint8Array {
    return Uint8Array.from(this.#h);
  }

  hasKey(): boolean {
    return this.#cipher.hasKey();
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.#cipher.encryptWithAd(this.#h, plaintext);
    this.mixHash(ciphertext);
    return ciphertext;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.#cipher.decryptWithAd(this.#h, ciphertext);
    this.mixHash(ciphertext);
    return plaintext;
  }

  /** [c1, c2]: c1 encrypts initiator → responder. */
  split(): [CipherState, CipherState] {
    const [first, second] = hkdf(this.#ck, EMPTY, 2) as [Uint8Array, Uint8Array];
    return [new CipherState(first.subarray(0, KEY_BYTES)), new CipherState(second.subarray(0, KEY_BYTES))];
  }
}

// ---- handshake patterns (§7) ----

type Token = 'e' | 's' | 'ee' | 'es' | 'se' | 'ss';

interface PatternSpec {
  /** Pre-messages: these patterns only pre-share static keys ("-> s", "<- s"). */
  readonly initiatorStaticKnown: boolean;
  readonly responderStaticKnown: boolean;
  readonly messages: readonly (readonly Token[])[];
}

function spec(initiatorStaticKnown: boolean, responderStaticKnown: boolean, ...messages: string[]): PatternSpec {
  return {
    initiatorStaticKnown,
    responderStaticKnown,
    messages: messages.map((m) => m.split(',').map((t) => t.trim() as Token)),
  };
}

const PATTERNS = {
  NN: spec(false, false, 'e', 'e, ee'),
  NK: spec(false, true, 'e, es', 'e, ee'),
  NX: spec(false, false, 'e', 'e, ee, s, es'),
  XN: spec(false, false, 'e', 'e, ee', 's, se'),
  XK: spec(false, true, 'e, es', 'e, ee', 's, se'),
  XX: spec(false, false, 'e', 'e, ee, s, es', 's, se'),
  KN: spec(true, false, 'e', 'e, ee, se'),
  KK: spec(true, true, 'e, es, ss', 'e, ee, se'),
  KX: spec(true, false, 'e', 'e, ee, se, s, es'),
  IN: spec(false, false, 'e, s', 'e, ee, se'),
  IK: spec(false, true, 'e, es, s, ss', 'e, ee, se'),
  IX: spec(false, false, 'e, s', 'e, ee, se, s, es'),
} as const satisfies Record<string, PatternSpec>;

export type Pattern = keyof typeof PATTERNS;
export const PATTERN_NAMES = Object.keys(PATTERNS) as Pattern[];

const PROTOCOL_PREFIX = 'Noise_';
const PROTOCOL_SUFFIX = '_25519_ChaChaPoly_BLAKE2b';

/** "Noise_IK_25519_ChaChaPoly_BLAKE2b" for 'IK'. */
export function protocolName(pattern: Pattern): string {
  return `${PROTOCOL_PREFIX}${pattern}${PROTOCOL_SUFFIX}`;
}

/** The pattern of "Noise_<pattern>_25519_ChaChaPoly_BLAKE2b"; undefined for anything else. */
export function patternFromProtocolName(name: string): Pattern | undefined {
  if (!name.startsWith(PROTOCOL_PREFIX) || !name.endsWith(PROTOCOL_SUFFIX)) return undefined;
  const middle = name.slice(PROTOCOL_PREFIX.length, name.length - PROTOCOL_SUFFIX.length);
  return Object.hasOwn(PATTERNS, middle) ? (middle as Pattern) : undefined;
}

function usesLocalStatic(p: PatternSpec, initiator: boolean): boolean {
  if (initiator ? p.initiatorStaticKnown : p.responderStaticKnown) return true;
  return p.messages.some((tokens, index) => (index % 2 === 0) === initiator && tokens.includes('s'));
}

/**
 * What `HandshakeState.create` requires: `localStatic` when this side's static key is used;
 * `remoteStatic` exactly when the pattern's pre-message gives the peer's key (IK initiator: yes;
 * IK responder: no). A remote static key the peer sends is never preset: compare `remoteStatic`
 * after the handshake instead.
 */
export interface HandshakeConfig {
  pattern: Pattern;
  initiator: boolean;
  prologue?: Uint8Array;
  localStatic?: DhKeyPair;
  remoteStatic?: Uint8Array;
  /** Tests only: a fixed ephemeral instead of a random one. */
  localEphemeral?: DhKeyPair;
}

/** The transport keys after a completed handshake, named by direction for this side. */
export interface TransportKeys {
  send: CipherState;
  receive: CipherState;
}

/** Noise §5.3. */
export class HandshakeState {
  readonly pattern: Pattern;
  readonly initiator: boolean;
  readonly #spec: PatternSpec;
  readonly #symmetric: SymmetricState;
  readonly #localStatic: DhKeyPair | undefined;
  #localEphemeral: DhKeyPair | undefined;
  #remoteStatic: Uint8Array | undefined;
  #remoteEphemeral: Uint8Array | undefined;
  #messageIndex = 0;
  #failed = false;

  private constructor(config: HandshakeConfig, symmetric: SymmetricState) {
    this.pattern = config.pattern;
    this.initiator = config.initiator;
    this.#spec = PATTERNS[config.pattern];
    this.#symmetric = symmetric;
    this.#localStatic = config.localStatic;
    this.#localEphemeral = config.localEphemeral;
    this.#remoteStatic = config.remoteStatic === undefined ? undefined : Uint8Array.from(config.remoteStatic);
  }

  static create(config: HandshakeConfig): HandshakeState {
    if (!Object.hasOwn(PATTERNS, config.pattern)) throw noiseError(`unsupported Noise pattern ${String(config.pattern)}`);
    const p = PATTERNS[config.pattern];
    const where = `noise ${config.pattern} ${config.initiator ? 'initiator' : 'responder'}: `;
    if (usesLocalStatic(p, config.initiator) && config.localStatic === undefined) {
      throw noiseError(`${where}the pattern needs a local static key`);
    }
    const remotePremessage = config.initiator ? p.responderStaticKnown : p.initiatorStaticKnown;
    if (remotePremessage && config.remoteStatic === undefined) {
      throw noiseError(`${where}the pattern needs the peer's static key in advance`);
    }
    if (!remotePremessage && config.remoteStatic !== undefined) {
      throw noiseError(
        `${where}the peer's static key cannot be preset (the peer sends it, or the pattern has none); ` +
          'compare remoteStatic after the handshake instead',
      );
    }
    if (config.remoteStatic !== undefined && config.remoteStatic.length !== DH_BYTES) {
      throw noiseError(`${where}the peer's static key is 32 bytes, not ${config.remoteStatic.length}`);
    }
    // Initialize(): protocol name, prologue, then the pre-message keys, the initiator's first.
    const symmetric = new SymmetricState(protocolName(config.pattern));
    symmetric.mixHash(config.prologue ?? EMPTY);
    if (p.initiatorStaticKnown) {
      symmetric.mixHash(config.initiator ? config.localStatic!.publicKey : config.remoteStatic!);
    }
    if (p.responderStaticKnown) {
      symmetric.mixHash(config.initiator ? config.remoteStatic! : config.localStatic!.publicKey);
    }
    return new HandshakeState(config, symmetric);
  }

  isComplete(): boolean {
    return !this.#failed && this.#messageIndex === this.#spec.messages.length;
  }

  isMyTurn(): boolean {
    return !this.#failed && !this.isComplete() && (this.#messageIndex % 2 === 0) === this.initiator;
  }

  isFailed(): boolean {
    return this.#failed;
  }

  get handshakeHash(): Uint8Array {
    return this.#symmetric.handshakeHash;
  }

  /** The peer's static key once known (pre-known or received). */
  get remoteStatic(): Uint8Array | undefined {
    return this.#remoteStatic === undefined ? undefined : Uint8Array.from(this.#remoteStatic);
  }

  #fail(message: string): MeshError {
    this.#failed = true;
    this.#localEphemeral = undefined;
    return noiseError(`noise handshake: ${message}`);
  }

  #turnProblem(writing: boolean): string | undefined {
    if (this.#failed) return 'already failed; start a new handshake';
    if (this.isComplete()) return 'already complete; use split()';
    const number = this.#messageIndex + 1;
    if (writing && !this.isMyTurn()) return `not our turn to write: waiting for the peer's message ${number}`;
    if (!writing && this.isMyTurn()) return `not our turn to read: we must write message ${number} first`;
    return undefined;
  }

  #mixDh(token: 'ee' | 'es' | 'se' | 'ss'): void {
    const need = <T>(value: T | undefined, what: string): T => {
      if (value === undefined) throw noiseError(`missing ${what}`);
      return value;
    };
    const localE = () => need(this.#localEphemeral, 'local ephemeral key');
    const localS = () => need(this.#localStatic, 'local static key');
    const remoteE = () => need(this.#remoteEphemeral, "peer's ephemeral key");
    const remoteS = () => need(this.#remoteStatic, "peer's static key");
    let shared: Uint8Array;
    switch (token) {
      case 'ee':
        shared = dh(localE(), remoteE());
        break;
      case 'es':
        shared = this.initiator ? dh(localE(), remoteS()) : dh(localS(), remoteE());
        break;
      case 'se':
        shared = this.initiator ? dh(localS(), remoteE()) : dh(localE(), remoteS());
        break;
      case 'ss':
        shared = dh(localS(), remoteS());
        break;
    }
    this.#symmetric.mixKey(shared);
    shared.fill(0);
  }

  /** The handshake message carrying `payload`. */
  writeMessage(payload: Uint8Array = EMPTY): Uint8Array {
    const problem = this.#turnProblem(true);
    if (problem !== undefined) throw this.#fail(problem);
    if (payload.length > MAX_MESSAGE_BYTES) {
      throw this.#fail(`payload of ${payload.length} bytes does not fit a 65535-byte message`);
    }
    const tokens = this.#spec.messages[this.#messageIndex] ?? [];
    const parts: Uint8Array[] = [];
    try {
      for (const token of tokens) {
        if (token === 'e') {
          if (this.#localEphemeral === undefined) this.#localEphemeral = generateDhKeyPair();
          parts.push(this.#localEphemeral.publicKey);
          this.#symmetric.mixHash(this.#localEphemeral.publicKey);
        } else if (token === 's') {
          parts.push(this.#symmetric.encryptAndHash(this.#localStatic!.publicKey));
        } else {
          this.#mixDh(token);
        }
      }
      parts.push(this.#symmetric.encryptAndHash(payload));
    } catch (error) {
      throw this.#fail(error instanceof Error ? error.message : String(error));
    }
    const message = concatBytes(...parts);
    if (message.length > MAX_MESSAGE_BYTES) {
      throw this.#fail(`message of ${message.length} bytes is longer than 65535 (payload too large)`);
    }
    this.#messageIndex += 1;
    return message;
  }

  /** The payload of the peer's handshake message. */
  readMessage(message: Uint8Array): Uint8Array {
    const problem = this.#turnProblem(false);
    if (problem !== undefined) throw this.#fail(problem);
    if (message.length > MAX_MESSAGE_BYTES) {
      throw this.#fail(`message of ${message.length} bytes is longer than 65535`);
    }
    const tokens = this.#spec.messages[this.#messageIndex] ?? [];
    const number = this.#messageIndex + 1;
    let rest = message;
    const tooShort = (what: string, needed: number) =>
      this.#fail(`message ${number} too short for ${what} (needs ${needed} bytes, ${rest.length} left)`);
    for (const token of tokens) {
      if (token === 'e') {
        if (rest.length < DH_BYTES) throw tooShort('the ephemeral key', DH_BYTES);
        this.#remoteEphemeral = Uint8Array.from(rest.subarray(0, DH_BYTES));
        this.#symmetric.mixHash(this.#remoteEphemeral);
        rest = rest.subarray(DH_BYTES);
      } else if (token === 's') {
        // Encrypted (with a tag) once a DH has keyed the cipher, plain before (§5.3, "s").
        const length = DH_BYTES + (this.#symmetric.hasKey() ? TAG_BYTES : 0);
        if (rest.length < length) throw tooShort('the static key', length);
        try {
          this.#remoteStatic = this.#symmetric.decryptAndHash(rest.subarray(0, length));
        } catch {
          throw this.#fail(`cannot decrypt the peer's static key in message ${number} (authentication failed)`);
        }
        rest = rest.subarray(length);
      } else {
        try {
          this.#mixDh(token);
        } catch (error) {
          throw this.#fail(error instanceof Error ? error.message : String(error));
        }
      }
    }
    if (this.#symmetric.hasKey() && rest.length < TAG_BYTES) throw tooShort("the payload's tag", TAG_BYTES);
    let payload: Uint8Array;
    try {
      payload = this.#symmetric.decryptAndHash(rest);
    } catch {
      throw this.#fail(`cannot decrypt the payload of message ${number} (authentication failed)`);
    }
    this.#messageIndex += 1;
    return payload;
  }

  /** The transport keys; only after the last message. */
  split(): TransportKeys {
    if (!this.isComplete()) throw noiseError('HandshakeState.split before the handshake is complete');
    const [initiatorToResponder, responderToInitiator] = this.#symmetric.split();
    return this.initiator
      ? { send: initiatorToResponder, receive: responderToInitiator }
      : { send: responderToInitiator, receive: initiatorToResponder };
  }
}
