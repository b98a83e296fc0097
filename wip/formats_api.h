// >>api-formats
typedef struct qlora_str { const char *ptr; size_t len; } qlora_str;

// JSON (RFC 8259) DOM. Strings are unescaped to UTF-8 and NUL-terminated (len excludes the NUL).
typedef enum qlora_json_type {
    QLORA_JSON_NULL, QLORA_JSON_FALSE, QLORA_JSON_TRUE, QLORA_JSON_NUMBER,
    QLORA_JSON_STRING, QLORA_JSON_ARRAY, QLORA_JSON_OBJECT
} qlora_json_type;
typedef struct qlora_json {
    qlora_json_type type;
    double  num;                 // NUMBER
    char   *str;  size_t len;    // STRING value (len bytes)
    char   *key;  size_t key_len;// member name when inside an OBJECT
    size_t  count;               // ARRAY/OBJECT: number of children
    struct qlora_json *child;    // first child
    struct qlora_json *next;     // next sibling
} qlora_json;
// err gets "line L, column C: what" on failure.
QLORA_API qlora_result qlora_json_parse(const char *text, size_t len, qlora_json **out, char *err, size_t errcap);
QLORA_API void qlora_json_free(qlora_json *j);
QLORA_API const qlora_json *qlora_json_get(const qlora_json *obj, const char *key);   // NULL if absent
QLORA_API const qlora_json *qlora_json_at(const qlora_json *arr, size_t i);
QLORA_API double qlora_json_num(const qlora_json *obj, const char *key, double def);
QLORA_API const char *qlora_json_str(const qlora_json *obj, const char *key, const char *def);

// Whole-file access: read-only mmap (falls back to read()). Never written through.
typedef struct qlora_file { const uint8_t *data; size_t size; int mapped; } qlora_file;
QLORA_API qlora_result qlora_file_open(qlora_ctx *ctx, const char *path, qlora_file *f);
QLORA_API void qlora_file_close(qlora_file *f);

// GGUF v2/v3 reader.
typedef enum qlora_gguf_vtype {
    QLORA_GGUF_UINT8 = 0, QLORA_GGUF_INT8, QLORA_GGUF_UINT16, QLORA_GGUF_INT16, QLORA_GGUF_UINT32,
    QLORA_GGUF_INT32, QLORA_GGUF_FLOAT32, QLORA_GGUF_BOOL, QLORA_GGUF_STRING, QLORA_GGUF_ARRAY,
    QLORA_GGUF_UINT64, QLORA_GGUF_INT64, QLORA_GGUF_FLOAT64, QLORA_GGUF_VTYPE_COUNT
} qlora_gguf_vtype;
typedef struct qlora_gguf_kv {
    qlora_str key;
    qlora_gguf_vtype type;
    qlora_gguf_vtype arr_type;   // ARRAY only
    uint64_t   arr_n;            // ARRAY only
    const uint8_t *data;         // scalar value / first array element (raw little-endian)
    qlora_str *strs;             // ARRAY of STRING: arr_n entries; STRING: 1 entry
} qlora_gguf_kv;
typedef struct qlora_gguf_tensor {
    qlora_str name;
    uint32_t  ggml_type;         // raw ggml type id
    qlora_type type;             // mapped (QLORA_TYPE_COUNT if unsupported)
    int       n_dims;
    int64_t   ne[4];
    uint64_t  offset;            // relative to the data section
    const uint8_t *data;         // into the mapping
    size_t    nbytes;
} qlora_gguf_tensor;
typedef struct qlora_gguf {
    qlora_file file;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    qlora_gguf_kv *kv;
    qlora_gguf_tensor *tensors;
    size_t alignment, data_offset;
} qlora_gguf;
QLORA_API qlora_result qlora_gguf_open(qlora_ctx *ctx, const char *path, qlora_gguf **out);
QLORA_API qlora_result qlora_gguf_open_memory(qlora_ctx *ctx, const uint8_t *data, size_t size, qlora_gguf **out);
QLORA_API void qlora_gguf_close(qlora_gguf *g);
QLORA_API const qlora_gguf_kv *qlora_gguf_find(const qlora_gguf *g, const char *key);
QLORA_API const qlora_gguf_tensor *qlora_gguf_find_tensor(const qlora_gguf *g, const char *name);
// Scalars with conversion between numeric types; def when absent or of another kind.
QLORA_API int64_t qlora_gguf_int(const qlora_gguf *g, const char *key, int64_t def);
QLORA_API double  qlora_gguf_float(const qlora_gguf *g, const char *key, double def);
QLORA_API qlora_str qlora_gguf_string(const qlora_gguf *g, const char *key);   // {NULL,0} if absent
// Numeric array element i as double / int64 (any numeric elem type).
QLORA_API double  qlora_gguf_arr_float(const qlora_gguf_kv *kv, uint64_t i);
QLORA_API int64_t qlora_gguf_arr_int(const qlora_gguf_kv *kv, uint64_t i);

// safetensors reader (validates: header JSON, dtypes, shapes, offsets tile the buffer exactly).
typedef struct qlora_st_tensor {
    char     *name;
    char      dtype[12];         // "F32", "F16", "BF16", "U8", "I8", "I32", "I64", ...
    int       n_dims;
    int64_t   shape[8];
    const uint8_t *data;
    size_t    nbytes;
} qlora_st_tensor;
typedef struct qlora_st {
    qlora_file file;
    size_t n;
    qlora_st_tensor *tensors;
    qlora_json *metadata_json;   // whole header (owns names)
} qlora_st;
QLORA_API qlora_result qlora_st_open(qlora_ctx *ctx, const char *path, qlora_st **out);
QLORA_API qlora_result qlora_st_open_memory(qlora_ctx *ctx, const char *name, const uint8_t *data, size_t size, qlora_st **out);
QLORA_API void qlora_st_close(qlora_st *st);
QLORA_API const qlora_st_tensor *qlora_st_find(const qlora_st *st, const char *name);
// Writer: tensors laid out in the safetensors canonical order (dtype desc, then name), header
// padded to 8, {"__metadata__":{"format":"pt"}}. Written to path.tmp, then renamed.
typedef struct qlora_st_entry { const char *name; const char *dtype; int n_dims; int64_t shape[8]; const void *data; size_t nbytes; } qlora_st_entry;
QLORA_API qlora_result qlora_st_write(qlora_ctx *ctx, const char *path, const qlora_st_entry *entries, size_t n);
