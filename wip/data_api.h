// >>api-data
// Training data: a file becomes a list of examples, each a row of token ids plus labels in the
// Hugging Face convention (labels[t] = ids[t] where the loss counts, -100 where it does not; the
// model shifts, so labels[t] is the target predicted at position t-1). Rows are then cut into
// batches of B x T with right padding (pad id = EOS, label -100), optionally packed.
#define QLORA_IGNORE_INDEX (-100)

typedef enum qlora_data_format {
    QLORA_DATA_AUTO = 0,   // from the extension: .txt text; .jsonl/.json by the keys of the first
                           // record (messages/conversations chat, instruction alpaca, else jsonl);
                           // others: fortune when a line is exactly "%", else text
    QLORA_DATA_TEXT,       // the whole file tokenized once, cut into max_seq_length windows
    QLORA_DATA_JSONL,      // one object per line, cfg.field holds the text; loss on all of it
    QLORA_DATA_ALPACA,     // instruction/input/output (also self-instruct instances[], dolly
                           // context/response); Stanford Alpaca prompt; loss on output + EOS
    QLORA_DATA_CHAT,       // {"messages":[{"role","content"}]} (or ShareGPT "conversations" with
                           // from/value, OpenAssistant role "prompter"); loss on assistant turns
    QLORA_DATA_FORTUNE,    // Debian fortune file: records separated by lines holding only "%"
    QLORA_DATA_FORMAT_COUNT
} qlora_data_format;

// Zero-initialised = defaults.
typedef struct qlora_data_config {
    int      max_seq_length;    // T (default 256); longer examples are truncated (start kept)
    qlora_data_format format;   // default AUTO
    const char *field;          // jsonl: key of the text (default "text")
    int      packing;           // concatenate examples (each ending in EOS) into full T windows
    int      no_eos;            // do not append EOS to jsonl/alpaca/fortune examples
    int      skip_long_prompts; // skip (and count) examples whose prompt fills T, instead of failing
    int      pad_to_max;        // batches always T wide (default: as wide as the longest row);
                                // the trainer copies it into qlora_data_loader.pad_to_max
    uint64_t seed;              // shuffling and validation split (the CLI passes --seed, 42)
    size_t   max_samples;       // keep the first N examples of the file (0 = all)
    double   validation_split;  // fraction in [0,1) held out for eval when no eval file is given
} qlora_data_config;

// All examples of a dataset live in two arrays (one allocation per role, llm.c style):
// example i is ids[off[i] .. off[i+1]) with its labels at the same positions.
typedef struct qlora_dataset {
    size_t   n;                 // examples (rows)
    size_t  *off;               // [n + 1]
    int32_t *ids;               // [off[n]]
    int32_t *labels;            // [off[n]] id or QLORA_IGNORE_INDEX
    int      max_seq_length;    // every example has 1 <= length <= max_seq_length
    int32_t  pad_id;            // EOS (0 when the tokenizer has none)
    qlora_data_format format;   // resolved
    size_t   n_tokens;          // off[n]
    size_t   n_loss_tokens;     // targets: labels != -100 at row positions >= 1 (after the shift)
    size_t   n_truncated;       // examples cut at max_seq_length
    size_t   n_skipped;         // examples dropped (skip_long_prompts)
    int      packed;            // rows are packed windows
    char    *name;              // file path, for messages
} qlora_dataset;

// Parses and tokenizes path. Errors name the file and line: "data.jsonl:3: malformed JSON ...",
// "data.jsonl:2: missing field \"text\"", "data.jsonl: empty dataset", "alpaca.jsonl:5:
// max-seq-length 16 is smaller than the prompt (40 tokens)".
QLORA_API qlora_result qlora_dataset_load(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *path,
                                          const qlora_data_config *cfg, qlora_dataset **out);
// Same from a memory buffer; name is used in messages and for AUTO (its extension).
QLORA_API qlora_result qlora_dataset_load_memory(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *name,
                                                 const char *data, size_t size, const qlora_data_config *cfg,
                                                 qlora_dataset **out);
QLORA_API void qlora_dataset_free(qlora_dataset *ds);
QLORA_API size_t qlora_dataset_length(const qlora_dataset *ds, size_t i);   // tokens of example i
// Deterministic train/eval split (like datasets' train_test_split): n_eval = ceil(fraction * n),
// chosen by a seeded permutation; both keep file order. Both parts must be non-empty.
QLORA_API qlora_result qlora_dataset_split(qlora_ctx *ctx, const qlora_dataset *ds, double fraction, uint64_t seed,
                                           qlora_dataset **train, qlora_dataset **eval);
// Packing: examples concatenated in order (labels kept) and cut into windows of T tokens; the last
// window may be shorter. Examples should end in EOS so the model learns the boundaries.
QLORA_API qlora_result qlora_dataset_pack(qlora_ctx *ctx, const qlora_dataset *ds, int T, qlora_dataset **out);
// Everything the trainer needs from the config: load train (and eval_path when not NULL, else the
// validation_split part, else *eval = NULL), pack both when cfg->packing.
QLORA_API qlora_result qlora_data_prepare(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *train_path,
                                          const char *eval_path, const qlora_data_config *cfg,
                                          qlora_dataset **train, qlora_dataset **eval);
QLORA_API const char *qlora_data_format_name(qlora_data_format f);
QLORA_API qlora_result qlora_data_format_parse(qlora_ctx *ctx, const char *name, qlora_data_format *out);

// A batch: B rows x T columns, row-major; rows shorter than T are padded with pad_id / -100.
typedef struct qlora_batch {
    int      B, T;              // rows filled, columns used (T <= T_cap)
    int      B_cap, T_cap;
    int32_t *ids;               // (B, T)
    int32_t *labels;            // (B, T)
    int32_t *lengths;           // (B) real tokens per row
    size_t   n_loss;            // targets in the batch: labels != -100 at columns >= 1
} qlora_batch;
QLORA_API qlora_result qlora_batch_init(qlora_ctx *ctx, qlora_batch *b, int B, int T);
QLORA_API void qlora_batch_free(qlora_batch *b);

// Position in the data stream, as plain integers so a checkpoint can store it and resume exactly.
// The order of epoch e is a Fisher-Yates permutation driven by splitmix64(seed, e): nothing else
// is needed to rebuild it.
typedef struct qlora_data_cursor {
    uint64_t epoch;             // completed passes
    uint64_t pos;               // rows of the current epoch already handed out
    uint64_t seed;              // shuffling seed
    uint64_t rows;              // dataset rows when saved (restore refuses other data; 0 = unchecked)
} qlora_data_cursor;

typedef struct qlora_data_loader {
    const qlora_dataset *ds;
    int      B;                 // rows per batch
    int      shuffle;           // permute rows every epoch
    int      repeat;            // wrap to the next epoch (training); else next() returns 0 at the end
    int      pad_to_max;        // batches T_cap wide
    qlora_data_cursor cur;
    size_t  *perm;              // [ds->n] order of the current epoch
    uint64_t perm_epoch;        // epoch perm was built for (UINT64_MAX: none)
} qlora_data_loader;

// Training: shuffle = 1, repeat = 1. Eval: shuffle = 0, repeat = 0.
QLORA_API qlora_result qlora_loader_init(qlora_ctx *ctx, qlora_data_loader *L, const qlora_dataset *ds, int B,
                                         int shuffle, int repeat, uint64_t seed);
QLORA_API void qlora_loader_free(qlora_data_loader *L);
// Fills b with the next min(B, rows left in the epoch) rows and returns how many (0: an eval pass
// is over; call qlora_loader_rewind to start again). The last batch of an epoch may be smaller.
QLORA_API int  qlora_loader_next(qlora_data_loader *L, qlora_batch *b);
QLORA_API void qlora_loader_rewind(qlora_data_loader *L);
QLORA_API qlora_data_cursor qlora_loader_cursor(const qlora_data_loader *L);
QLORA_API qlora_result qlora_loader_restore(qlora_ctx *ctx, qlora_data_loader *L, qlora_data_cursor c);
QLORA_API size_t qlora_loader_batches_per_epoch(const qlora_data_loader *L);   // ceil(n / B)
