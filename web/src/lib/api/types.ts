/**
 * The shapes the page uses, named once. They are the server's Pydantic models as generated
 * into schema.d.ts from /openapi.json (scripts/dump-openapi.py, `npm run gen:api`); where
 * the document does not define a route yet, the shape is issue 12's contract and is
 * replaced by the generated one when the route lands.
 */
import type { components } from './schema';

type Schemas = components['schemas'];

export type Role = Schemas['MessagePublic']['role'];
export type MessageStatus = Schemas['MessagePublic']['status'];

/** A tool call as the page shows it (the server stores calls as free-form objects). */
export interface ToolCall {
  id: string;
  name: string;
  arguments: string | Record<string, unknown>;
  result?: string | null;
  /** Set where a stream said the tool failed. */
  error?: boolean;
}

/** A stored file (POST /api/files' answer, the list's rows). */
export type FileInfo = Schemas['FilePublic'];
/** A file a user message attached. */
export type Attachment = Schemas['Attachment'];
/** One passage a `search` step returned; the answer cites it as `[n]`. */
export type Source = Schemas['Source'];

export type Message = Omit<Schemas['MessagePublic'], 'tool_calls' | 'memory_used' | 'attachments'> & {
  /** The answer's prompt held the user's memory facts (absent on a message made here). */
  memory_used?: boolean;
  /** A user message's files, as they were when sent (absent on a message made here). */
  attachments?: Attachment[];
  /** As stored (free-form objects); tree.toolCalls reads them as ToolCall. */
  tool_calls?: ToolCall[] | Record<string, unknown>[] | null;
  /** Kept by the page after the user rates an answer. */
  feedback?: Feedback | null;
  /** Where the server sends the tree around the branch: ids of this message's siblings. */
  sibling_ids?: string[] | null;
  name?: string | null;
};

export type Conversation = Schemas['ConversationPublic'] & {
  /** Present on GET /api/conversations/{id}: the current branch, root first. */
  messages?: Message[];
};

export type Project = Schemas['ProjectPublic'];
export type ProjectCreate = Schemas['ProjectCreate'];
export type ProjectUpdate = Schemas['ProjectUpdate'];
export type User = Schemas['UserPublic'];
export type AuthProviders = Schemas['Providers'];
export type Feedback = Schemas['FeedbackCreate'];
export type SearchHit = Schemas['SearchHit'];
export type RunResult = Schemas['RunResult'];
export type RunFile = Schemas['RunFile'];
export type PreviewCreated = Schemas['PreviewCreated'];
export type ModelInfo = Schemas['ModelPublic'];
/** `key` only in the answer to POST /api/keys: shown once. */
export type ApiKey = Schemas['KeyPublic'] & { key?: string };
export type Share = Schemas['ShareCreated'];
export type SharePublic = Schemas['SharePublic'];
export type SharedConversation = Schemas['SharedConversation'];
export type UsageRow = Schemas['UsageRow'];
export type UserSettings = Schemas['SettingsPublic'];
export type MemoryFact = Schemas['MemoryFactPublic'];
export type ConnectionPublic = Schemas['ConnectionPublic'];
/** A connection being edited: the key is write-only (empty = keep the stored one). */
export type ConnectionDraft = Schemas['ConnectionIn'] & { has_key?: boolean };
export type ImportResult = Schemas['ImportResult'];
export type Preset = Schemas['PresetPublic'];
export type PresetCreate = Schemas['PresetCreate'];
export type ImproveSummary = Schemas['ImproveSummary'];
export type ModelVersion = Schemas['VersionPublic'];
export type VersionList = Schemas['VersionList'];

/** One model's measures in a job's comparison (fireside/eval/compare.py). */
export interface ModelMeasures {
  win_rate?: number;
  bits_per_byte?: number;
  tool_eval?: Record<string, [number, number]>;
}

/** The job as the server sends it; `comparison` and `options` are free-form JSON there. */
export type ImproveJob = Omit<Schemas['JobPublic'], 'comparison' | 'options'> & {
  options: { method: 'dpo' | 'sft'; lora_rank: number | null; steps: number };
  comparison: { served?: ModelMeasures; candidate?: ModelMeasures; skipped?: Record<string, string> } | null;
};

/** A `progress` event of GET /api/admin/jobs/{id}/events. */
export interface JobProgress {
  step: number;
  total: number;
  loss: number;
  reward_margin?: number;
  eta_s?: number;
}

export interface Page<T> {
  data: T[];
  next_cursor: string | null;
}
