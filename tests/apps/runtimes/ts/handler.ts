// A TypeScript handler: compiled with esbuild before it runs.
type Event = { body?: string };
type Result = { statusCode: number; body: string };

const greet = (name: string): string => `hello ${name} from typescript`;

export const hello = async (event: Event): Promise<Result> => {
  const name: string = JSON.parse(event.body ?? "{}").name ?? "nobody";
  return { statusCode: 200, body: greet(name) };
};
