// How a Next.js app calls the API with types generated from /openapi.json (openapi-typescript).
// tests/test_typescript_client.py generates ./generated/api.d.ts from the app's schema and runs
// `tsc --noEmit --strict` on this file: a response field that turns optional, a `success` that is
// no longer a constant, or an error code added or removed breaks the build here first.
import type { components, paths } from "./generated/api";

type Schemas = components["schemas"];
export type Task = Schemas["TaskPublic"];
export type TaskCreate = Schemas["TaskCreate"];
export type ErrorBody = Schemas["ErrorBody"];
export type ErrorCode = Schemas["ErrorCode"];

// The JSON body of any documented answer of an operation: its success envelope | ErrorEnvelope.
type JsonBody<R> = R extends { content: { "application/json": infer B } } ? B : never;
type Answer<Op extends { responses: object }> = JsonBody<Op["responses"][keyof Op["responses"]]>;
type ListTasks = paths["/api/{user_id}/tasks"]["get"];
type CreateTask = paths["/api/{user_id}/tasks"]["post"];
export type ListTasksQuery = NonNullable<ListTasks["parameters"]["query"]>;

const API_URL = "http://localhost:8000";

/** `token`: the Better-Auth JWT (`authClient.token()`), or an access token from /api/auth/login. */
async function call<Op extends { responses: object }>(
  token: string,
  path: string,
  init: RequestInit = {},
): Promise<Answer<Op>> {
  const response = await fetch(`${API_URL}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  });
  return (await response.json()) as Answer<Op>;
}

export function listTasks(token: string, userId: string, query: ListTasksQuery = {}): Promise<Answer<ListTasks>> {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) params.set(name, String(value));
  }
  return call<ListTasks>(token, `/api/${encodeURIComponent(userId)}/tasks?${params}`);
}

export function createTask(token: string, userId: string, task: TaskCreate): Promise<Answer<CreateTask>> {
  return call<CreateTask>(token, `/api/${encodeURIComponent(userId)}/tasks`, {
    method: "POST",
    body: JSON.stringify(task),
  });
}

/** What to tell the user (or do) for each code: every code the API answers, and no other. */
export function explain(error: ErrorBody): string {
  const code: ErrorCode = error.code;
  switch (code) {
    case "TOKEN_EXPIRED":
      return "Your session expired: fetch a new token and retry.";
    case "NOT_AUTHENTICATED":
    case "INVALID_TOKEN":
    case "INVALID_CREDENTIALS":
    case "REFRESH_TOKEN_REUSED":
    case "REAUTHENTICATION_REQUIRED":
      return "Please sign in again.";
    case "FORBIDDEN":
    case "ACCOUNT_DISABLED":
      return "You may not do this.";
    case "NOT_FOUND":
      return "It is gone.";
    case "VALIDATION_ERROR":
    case "TASK_DEPTH_EXCEEDED":
    case "CYCLE":
    case "INVALID_RECURRENCE":
      return `Check ${error.field ?? "the form"}: ${error.message}`;
    case "CURSOR_EXPIRED":
      return "Reloading everything…"; // the change feed's cursor is too old: start a full sync
    case "BATCH_TOO_LARGE":
      return "Send at most 100 commands at once.";
    case "MALFORMED_REQUEST":
    case "CORS_NOT_ALLOWED":
    case "METHOD_NOT_ALLOWED":
    case "PAYLOAD_TOO_LARGE":
    case "IDEMPOTENCY_KEY_REUSED":
      return `The app sent a bad request: ${error.message}`;
    case "CONFLICT":
    case "EMAIL_TAKEN":
    case "PROJECT_ALREADY_PINNED":
    case "PIN_LIMIT_REACHED":
      return error.message;
    case "PRECONDITION_FAILED":
      return "Someone changed this meanwhile: reload it.";
    case "RATE_LIMITED":
    case "TOO_MANY_STREAMS":
      return "Slow down a little and try again.";
    case "SERVICE_UNAVAILABLE":
    case "INTERNAL_ERROR":
      return "Something went wrong on our side; try again shortly.";
    default: {
      const unhandled: never = code; // a code added to the API makes this line fail to compile
      return unhandled;
    }
  }
}

export async function dashboardHeadline(token: string, userId: string): Promise<string> {
  const body = await listTasks(token, userId, { status: "pending", sort: "-created_at", limit: 20 });
  if (!body.success) return explain(body.error); // narrowed to ErrorEnvelope
  const total: number = body.meta.total; // narrowed to TaskListEnvelope: meta is always there
  const first = body.data[0];
  if (!first) return "Nothing to do.";
  const title: string = first.title;
  const due: string | null = first.due_date; // always sent, null when there is none
  const description: string | null = first.description;
  return `${title}${due === null ? "" : ` (due ${due})`}${description ? `: ${description}` : ""}, and ${total - 1} more`;
}

export async function addTask(token: string, userId: string): Promise<Task | string> {
  const draft: TaskCreate = {
    title: "Write the release notes",
    priority: "high",
    due_date: "2026-12-01T17:00:00Z",
    project_id: null,
  };
  const body = await createTask(token, userId, draft);
  return body.success ? body.data : explain(body.error);
}

// Request bodies are exact too: a task needs its title, and the server owns `id` and `user_id`.
// @ts-expect-error title is required
export const untitled: TaskCreate = { priority: "low" };
// @ts-expect-error user_id is not a field a client may send
export const claimed: TaskCreate = { title: "Mine", user_id: "someone-else" };

// Every field of a task the API answers is present (some may be null): none is optional.
type OptionalKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? K : never }[keyof T];
type NoOptional<T> = OptionalKeys<T> extends never ? true : false;
export const everyTaskFieldIsSent: NoOptional<Task> = true;
export const everyProjectFieldIsSent: NoOptional<Schemas["ProjectPublic"]> = true;
export const everyListFieldIsSent: NoOptional<Schemas["TaskListEnvelope"]> = true;
export const everyErrorFieldIsSent: NoOptional<ErrorBody> = true;

// A batch: commands are a union discriminated by `op`, each with its own `data` (or none); a result's
// `item` is a task or a project, its `error` the single route's error body.
type Batch = paths["/api/{user_id}/batch"]["post"];
export type BatchCommand = Schemas["BatchRequest"]["commands"][number];

export async function sendOffline(token: string, userId: string, queued: BatchCommand[]): Promise<string[]> {
  const body = await call<Batch>(token, `/api/${encodeURIComponent(userId)}/batch`, {
    method: "POST",
    body: JSON.stringify({ commands: queued }),
  });
  if (!body.success) return [explain(body.error)];
  return body.data.results.map((result) => (result.error === null ? `${result.status}` : explain(result.error)));
}

export const queued: BatchCommand[] = [
  { id: "0b6f7c1e-2f5d-4a8e-9c61-3f1f0f8d9a10", op: "task.create", temp_id: "t1", data: { title: "Plan" } },
  { id: "5d2c4a1b-7e3f-4b6a-8c9d-0e1f2a3b4c5d", op: "task.complete", target: "t1", if_version: 1 },
];
// @ts-expect-error task.complete takes no data
export const completeWithData: BatchCommand = { id: "x", op: "task.complete", target: 1, data: {} };
