// The options every `cairn` command accepts (defined on the program in main.ts), as command
// groups in other files read them with `program.opts<GlobalOptions>()`.
export interface GlobalOptions {
  endpoint?: string;
  owner?: string;
  token?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  json?: boolean;
  quiet?: boolean;
}
