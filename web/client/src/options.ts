// Filling in an options object from its defaults.

/** `defaults`, with each option the caller gave (neither undefined nor null) in place of its default. */
export function withDefaults<D extends object>(options: { readonly [K in keyof D]?: D[K] | null | undefined }, defaults: D): D {
  const out = { ...defaults };
  for (const key of Object.keys(defaults) as (keyof D)[]) out[key] = options[key] ?? defaults[key];
  return out;
}
