// What a file's name says of its contents, for the review's filters: its
// type (the extension: safetensors, gguf, ckpt, bin, json...) and the
// precision of its weights (fp32, fp16, bf16, fp8, int8, int4), read from
// the name's words as model files are usually named ("model.fp16.safetensors",
// "unet-bf16.ckpt", "llama-Q8_0.gguf").  Pure: no page, no API.

export function typeOf(path) {
  const m = /\.([A-Za-z0-9]{1,12})$/.exec(path || '');
  return m ? m[1].toLowerCase() : '';
}

// Each precision and the words that name it (a word: letters, digits and
// underscores between other characters, case-insensitive).
const PRECISIONS = [
  ['fp32', /^(fp32|f32|float32)$/],
  ['bf16', /^(bf16|bfloat16)$/],
  ['fp16', /^(fp16|f16|float16)$/],
  ['fp8', /^(fp8|f8|float8|fp8_e4m3fn|fp8_e5m2|e4m3fn|e5m2)$/],
  ['int8', /^(int8|i8|8bit|q8|q8_0|q8_k)$/],
  ['int4', /^(int4|i4|4bit|nf4|q4|q4_0|q4_1|q4_k|q4_k_s|q4_k_m)$/],
];

// The precision a file's name says ('' when it says none).  Only its last
// part counts: a folder named "fp16" holds what its files say.
export function precisionOf(path) {
  const base = (path || '').split('/').pop().toLowerCase();
  const words = base.replace(/\.[a-z0-9]{1,12}$/, '').split(/[^a-z0-9_]+|_(?=(?:fp|bf|f|int|i|q|nf)\d)/);
  for (const w of words.map((x) => x.replace(/^_+|_+$/g, '')).reverse()) {
    for (const [name, re] of PRECISIONS) if (re.test(w)) return name;
  }
  return '';
}

// The distinct values of fn over the files, most frequent first, with their counts.
export function tally(items, fn) {
  const counts = new Map();
  for (const it of items) { const v = fn(it); if (v) counts.set(v, (counts.get(v) || 0) + 1); }
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}
