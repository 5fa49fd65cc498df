/**
 * An incremental scanner over tool calls as the model writes them, for streaming their
 * arguments as they are generated (OpenAI's `function.arguments` fragments).
 *
 * It reads `{"name": ..., "arguments" | "parameters": ...}` objects one after another and skips
 * whatever lies between them (`<tool_call>`, `</tool_call>`, `<|python_tag|>`, `;`, spaces), so
 * it serves both call formats of server/tools.ts. It tracks only what it needs: strings, their
 * escapes, and bracket depth; it checks nothing, because it runs only where a grammar enforces
 * the calls (tool_choice `required` or a named function). A call opens when its name string
 * ends; its arguments are the raw text of the value, from its first character to its last
 * (outer whitespace excluded), which is also what the non-streamed answer returns
 * (`argumentsText`), so the fragments concatenate to the same string.
 *
 * @module
 */

/** Where the scanner is. */
const enum At {
  /** Between calls: waits for a `{`. */
  Outside,
  /** In a call object: waits for a key's `"` or the closing `}`. */
  Key,
  /** In a key string. */
  KeyText,
  /** After a key: waits for `:`. */
  Colon,
  /** After `:`: waits for the value's first character. */
  Value,
  /** In the name string. */
  NameText,
  /** In the arguments value. */
  Arguments,
  /** In another member's value. */
  Other,
  /** After a value: waits for `,` or the closing `}`. */
  Member,
}

const QUOTE = 0x22, BACKSLASH = 0x5c, COLON = 0x3a, COMMA = 0x2c;
const OPEN_BRACE = 0x7b, CLOSE_BRACE = 0x7d, OPEN_BRACKET = 0x5b, CLOSE_BRACKET = 0x5d;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** What the scanner reports, in order. */
export interface ToolCallSink {
  /** Call `index` (0, 1, ...) has its whole name. */
  open(index: number, name: string): void;
  /** The next piece of call `index`'s arguments text (never empty). */
  arguments(index: number, fragment: string): void;
}

/** Reads calls from text pushed piece by piece; see the module doc. */
export class ToolCallScanner {
  #at = At.Outside;
  /** The key being read (raw JSON text between its quotes). */
  #key = "";
  /** The name being read, raw. */
  #name = "";
  /** Arguments text seen before the call's name (never with the grammar's key order). */
  #early = "";
  #opened = false;
  #calls = 0;
  /** Argument values seen in the current call. */
  #argumentValues = 0;
  /** Bracket depth inside the current value. */
  #depth = 0;
  #inString = false;
  #escaped = false;

  constructor(readonly sink: ToolCallSink) {}

  /** How many calls have opened. */
  get calls(): number {
    return this.#calls;
  }

  /** Whether the scanner is between calls: no call begun or the last one closed. */
  get between(): boolean {
    return this.#at === At.Outside;
  }

  /** Argument values the last call has had so far (1 in a well-formed call). */
  get argumentValues(): number {
    return this.#argumentValues;
  }

  /** Reads the next piece of the answer. */
  push(text: string): void {
    let from = 0; // where the unreported arguments (or key, or name) text of this piece starts
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      switch (this.#at) {
        case At.Outside:
          if (c === OPEN_BRACE) {
            this.#at = At.Key;
            this.#opened = false;
            this.#name = this.#early = "";
            this.#argumentValues = 0;
          }
          break;
        case At.Key:
          if (c === QUOTE) {
            this.#at = At.KeyText;
            this.#key = "";
            this.#escaped = false;
            from = i + 1;
          } else if (c === CLOSE_BRACE) this.#at = At.Outside;
          break;
        case At.KeyText:
        case At.NameText:
          if (this.#escaped) this.#escaped = false;
          else if (c === BACKSLASH) this.#escaped = true;
          else if (c === QUOTE) {
            if (this.#at === At.KeyText) {
              this.#key += text.slice(from, i);
              this.#at = At.Colon;
            } else {
              this.#name += text.slice(from, i);
              this.#at = At.Member;
              this.#open();
            }
          }
          break;
        case At.Colon:
          if (c === COLON) this.#at = At.Value;
          break;
        case At.Value:
          if (isSpace(c)) break;
          this.#depth = 0;
          this.#inString = this.#escaped = false;
          if (this.#key === "name" && c === QUOTE) {
            this.#at = At.NameText;
            this.#name = "";
            from = i + 1;
            break;
          }
          if (this.#key === "arguments" || this.#key === "parameters") {
            this.#at = At.Arguments;
            this.#argumentValues++;
            from = i;
          } else this.#at = At.Other;
          i = this.#value(text, i, c, from);
          break;
        case At.Arguments:
        case At.Other:
          i = this.#value(text, i, c, from);
          break;
        case At.Member:
          if (c === COMMA) this.#at = At.Key;
          else if (c === CLOSE_BRACE) this.#at = At.Outside;
          break;
      }
    }
    if (this.#at === At.Arguments && from < text.length) this.#report(text.slice(from));
    else if (this.#at === At.KeyText) this.#key += text.slice(from);
    else if (this.#at === At.NameText) this.#name += text.slice(from);
  }

  /**
   * Steps a value over character `c` at `i`; when the value ends, reports the rest of the
   * arguments and moves on. Returns the index the loop continues from (one back when the
   * character that ended a bare value also belongs to the object).
   */
  #value(text: string, i: number, c: number, from: number): number {
    let end = -1; // the value's end (exclusive) in this piece
    let again = false;
    if (this.#inString) {
      if (this.#escaped) this.#escaped = false;
      else if (c === BACKSLASH) this.#escaped = true;
      else if (c === QUOTE) {
        this.#inString = false;
        if (this.#depth === 0) end = i + 1;
      }
    } else if (c === QUOTE) this.#inString = true;
    else if (c === OPEN_BRACE || c === OPEN_BRACKET) this.#depth++;
    else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      if (this.#depth === 0) {
        end = i;
        again = true;
      } else if (--this.#depth === 0) end = i + 1;
    } else if (this.#depth === 0 && (c === COMMA || isSpace(c))) {
      end = i;
      again = true;
    }
    if (end < 0) return i;
    if (this.#at === At.Arguments && end > from) this.#report(text.slice(from, end));
    this.#at = At.Member;
    return again ? i - 1 : i;
  }

  #open(): void {
    if (this.#opened) return;
    this.#opened = true;
    const index = this.#calls++;
    this.sink.open(index, this.#name);
    if (this.#early !== "") this.sink.arguments(index, this.#early);
    this.#early = "";
  }

  #report(fragment: string): void {
    if (this.#opened) this.sink.arguments(this.#calls - 1, fragment);
    else this.#early += fragment;
  }
}

/**
 * The raw text of the arguments value of one call object (its JSON text), as the scanner
 * streams it; null when the object has no arguments member or more than one (then JSON.parse
 * picks one and the caller re-serializes it).
 */
export function argumentsText(objectText: string): string | null {
  let text = "";
  const scanner = new ToolCallScanner({
    open() {},
    arguments(_index, fragment) {
      text += fragment;
    },
  });
  scanner.push(objectText);
  return scanner.argumentValues === 1 ? text : null;
}
