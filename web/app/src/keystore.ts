// The browser's own storage (IndexedDB, this origin only): the agent seed of each user who logged
// in here and the current API token. The seed is generated here (WebCrypto's CSPRNG, through
// Identity.generate) and never leaves the browser: only the public card and signatures are sent.
// It cannot be a non-extractable WebCrypto key: the X25519 key for Noise is derived from it.

const DB_NAME = 'agent-mesh';
const DB_VERSION = 1;
const STORE = 'kv';

let opened: Promise<IDBDatabase> | undefined;

function open(): Promise<IDBDatabase> {
  opened ??= new Promise<IDBDatabase>((resolve, reject) => {
    if (typeof indexedDB === 'undefined') {
      reject(new Error('this browser has no IndexedDB (private mode?): the agent key cannot be kept'));
      return;
    }
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      if (!request.result.objectStoreNames.contains(STORE)) request.result.createObjectStore(STORE);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error ?? new Error('IndexedDB could not be opened'));
    request.onblocked = () => reject(new Error('IndexedDB is blocked by another tab of this page; close it and reload'));
  });
  opened.catch(() => {
    opened = undefined;
  });
  return opened;
}

async function run<T>(mode: IDBTransactionMode, action: (store: IDBObjectStore) => IDBRequest): Promise<T> {
  const db = await open();
  return new Promise<T>((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = action(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result as T);
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}

const get = <T>(key: string): Promise<T | undefined> => run<T | undefined>('readonly', (s) => s.get(key));
const put = (key: string, value: unknown): Promise<void> => run<void>('readwrite', (s) => s.put(value, key)).then(() => undefined);
const del = (key: string): Promise<void> => run<void>('readwrite', (s) => s.delete(key)).then(() => undefined);

/** The 32-byte seed of this browser's agent for `userId`, if one was made here. */
export async function loadSeed(userId: string): Promise<Uint8Array | undefined> {
  const value = await get<unknown>(`seed:${userId}`);
  if (value instanceof Uint8Array && value.length === 32) return value;
  return undefined;
}

/** Keeps the seed unless one exists already (then the stored one wins and is returned). */
export async function saveSeedOnce(userId: string, seed: Uint8Array): Promise<Uint8Array> {
  const db = await open();
  return new Promise<Uint8Array>((resolve, reject) => {
    const tx = db.transaction(STORE, 'readwrite');
    const store = tx.objectStore(STORE);
    const key = `seed:${userId}`;
    let result = seed;
    const existing = store.get(key);
    existing.onsuccess = () => {
      const value: unknown = existing.result;
      if (value instanceof Uint8Array && value.length === 32) result = value;
      else store.put(seed, key);
    };
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}

export async function loadToken(): Promise<string | undefined> {
  const value = await get<unknown>('token');
  return typeof value === 'string' && value !== '' ? value : undefined;
}

export const saveToken = (token: string): Promise<void> => put('token', token);
export const forgetToken = (): Promise<void> => del('token');

/** Drops the user's seed (its key was revoked): the next login makes a new one. */
export const forgetSeed = (userId: string): Promise<void> => del(`seed:${userId}`);

/** What the controller keeps in the browser (injectable for tests). */
export interface KeyStore {
  loadSeed(userId: string): Promise<Uint8Array | undefined>;
  saveSeedOnce(userId: string, seed: Uint8Array): Promise<Uint8Array>;
  forgetSeed(userId: string): Promise<void>;
  loadToken(): Promise<string | undefined>;
  saveToken(token: string): Promise<void>;
  forgetToken(): Promise<void>;
}

export const indexedDbStore: KeyStore = { loadSeed, saveSeedOnce, forgetSeed, loadToken, saveToken, forgetToken };
