// The public API of the agent-mesh TypeScript client (API.md "Public API"): identities, the mesh
// client and agent, errors, and the types their callers need. Lower layers (noise, session,
// endpoint, relay_link and the foundations) are importable from their own modules.
export { Identity, isValidAgentId } from './identity.js';
export { MeshError, ERROR_CODES, isErrorCode } from './errors.js';
export type { ErrorCode, MeshErrorCode } from './errors.js';
export type { JsonObject, JsonValue } from './ijson.js';
export { MeshAgent, MeshClient, MeshStream } from './mesh.js';
export type {
  Handler,
  IncomingCall,
  LinkStatus,
  MeshAgentOptions,
  MeshClientOptions,
  RequestOptions,
  StreamHandler,
  WebSocketConstructor,
} from './mesh.js';
export { RegistryClient, mayManage, personalGroup, ruleAllows } from './registry.js';
export type {
  AclRule,
  AgentCardResource,
  CardCapability,
  CardContent,
  DeviceLogin,
  DevicePoll,
  DiscoveryQuery,
  Me,
  RegistryClientOptions,
  RegistryInfo,
} from './registry.js';
