// The metadata model, written once over the ordered transactional KV: tree, versions, chunk index,
// upload sessions, shares, change feed, retention. Operations take a ModelContext (createContext).
export { createContext, DEFAULTS, type CommitHook, type CommittedFile, type ModelContext, type ModelOptions, type RetentionPolicy } from './context.js';
export type { ChunkRecord } from './codec.js';
export { currentRevision, listChanges, trimChanges, type ChangeEvent, type ChangePage, type ChangeType, type NodeKind } from './changes.js';
export { claimDeletions, finishDeletions, findChunks, nextDeletionDue, releaseDeletions, type ClaimedDeletion, type IndexedChunk } from './chunks.js';
export {
  commitFile, deleteEntry, getFile, getFileById, listFolder, listVersions, makeFolder, moveEntry, normalizeFolderPath, restoreEntry, setVersionMedia, statEntry,
  validateCommit, MEDIA_JOB_KIND, NOT_MEDIA, type ChunkWindow, type FileTarget, type MediaDerivative, type MediaJobPayload, type CommitInput, type EntryRecord, type FolderPage, type VersionRecord,
} from './files.js';
export { abortSession, appendChunks, commitSession, createSession, expireSessions, getSession, type CreateSessionInput, type SessionRecord } from './sessions.js';
export {
  checkAccess, createLink, grantShare, listGrants, listLinks, listSharedWith, resolveLink, revokeLink, revokeShare,
  type Access, type GrantRecord, type LinkRecord, type SharePermission,
} from './shares.js';
export { deleteUser, getPolicy, getUser, listTenantIds, listUsers, putUser, setPolicy, type UserRecord } from './tenants.js';
export { purgeDeleted, pruneExpiredVersions, runMaintenance, type MaintenanceStats } from './maintenance.js';
export { CHANGE_CHANNEL } from './keys.js';
export { adjustUsage, getUsage, recountUncounted, recountUsage, setQuota, type TenantUsage } from './usage.js';
export { adoptAddress, BLOCKS_SINCE_SKEW_MS, claimOrphans, DEFAULT_ORPHAN_GRACE_MS, DEFAULT_ORPHAN_TOMBSTONE_MS, endOrphanClaims, MAX_UPLOAD_BLOCKS_AGE_MS, forgetOrphans, noteOrphans, referencedAddresses } from './orphans.js';
export { INLINE_CHUNKS } from './versions.js';
