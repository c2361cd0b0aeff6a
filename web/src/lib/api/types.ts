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
}

export type Message = Omit<Schemas['MessagePublic'], 'tool_calls'> & {
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

export type User = Schemas['UserPublic'];
export type UserSettings = Schemas['SettingsPublic'];

export interface Page<T> {
  data: T[];
  next_cursor: string | null;
}

export interface Feedback {
  rating: 'up' | 'down';
  reason?: string | null;
  comment?: string | null;
}

export interface SearchHit {
  conversation_id: string;
  message_id: string;
  title: string | null;
  snippet: string;
}

export interface ModelInfo {
  id: string;
  owned_by?: string;
  connection?: string | null;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix?: string;
  created_at: string;
  last_used_at?: string | null;
  /** Only in the answer to POST /api/keys: shown once. */
  key?: string;
}

export interface Share {
  token: string;
  url?: string;
}

export interface SharedConversation {
  title: string | null;
  messages: Message[];
  created_at?: string;
}

export interface Connection {
  name: string;
  base_url: string;
  api_key?: string | null;
  models?: string[];
}

export interface UsageRow {
  user_id?: string;
  email?: string;
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  requests?: number;
}
