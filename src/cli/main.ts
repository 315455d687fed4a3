// Entry point of the `cairn` binary.
export async function main(_argv: string[]): Promise<void> {}
