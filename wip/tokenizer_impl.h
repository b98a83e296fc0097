// >>tokenizer
/* Three tokenizers behind one qlora_tokenizer (each reproduces its reference token for token):
   LLAMA2C  llama2.c run.c encode(): BOS, a dummy " " token, one lookup per UTF-8 character
            with byte fallback (<0xXX> = ids 3..258), then repeatedly merge the adjacent pair whose
            concatenated text is in the vocab with the highest score (leftmost on ties).
   SPM      llama.cpp llm_tokenizer_spm: ' ' -> U+2581 "▁", "▁" prefix, the same score-greedy
            merging over UTF-8 characters, characters never merged into a token as <0xXX> bytes.
   BPE      llama.cpp llm_tokenizer_bpe (GPT-2 byte level): the pre-tokenizer regex written out
            by hand over code points, every byte mapped to a printable code point (GPT-2
            bytes_to_unicode), then merges applied lowest rank first.
   All three "best pair first" loops run on a binary heap over a doubly linked list of symbols
   (O(n log n), llama.cpp's scheme) instead of llama2.c's O(n^2) rescan; the order of merges is
   the same. A heap entry is stale once either symbol grew or died: symbols only ever grow, so
   "left.n + right.n == size at push time" identifies live entries exactly.
   Special tokens (token_type control / user-defined / unknown) are cut out of the text first,
   longest first (llama.cpp tokenizer_st_partition); llama2.c's run.c has no such step. */

enum { QLORA__TT_NORMAL = 1, QLORA__TT_UNKNOWN = 2, QLORA__TT_CONTROL = 3, QLORA__TT_USER = 4,
       QLORA__TT_UNUSED = 5, QLORA__TT_BYTE = 6 };            // GGUF tokenizer.ggml.token_type
enum { QLORA__ALGO_LLAMA2C = 0, QLORA__ALGO_SPM, QLORA__ALGO_BPE };
// BPE pre-tokenizers (llama.cpp llm_tokenizer_bpe regex_exprs):
//   GPT2    'gpt2', 'gpt-2', 'default', ...:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   DIGITS  'smollm', 'starcoder', 'refact', 'command-r', 'codeshell', 'exaone', 'minerva':
//           first \p{N} (every digit its own word), then the GPT2 expression on what is between.
enum { QLORA__PRE_GPT2 = 0, QLORA__PRE_DIGITS };

// n strings in one pool with an open-addressing hash index (FNV-1a, linear probing).
typedef struct qlora__strtab {
    char     *pool;      // all strings, each followed by a NUL
    size_t   *off;       // [n + 1] string i is pool[off[i] .. off[i + 1] - 1)
    uint32_t *hash;      // [n] FNV-1a of string i
    int32_t  *slot;      // [mask + 1] string index, -1 = empty
    int32_t   n;
    uint32_t  mask;
} qlora__strtab;

struct qlora_tokenizer {
    int       algo;              // QLORA__ALGO_*
    int       pre;               // QLORA__PRE_* (BPE only)
    int32_t   n_vocab;
    qlora__strtab vocab;         // token texts, id = index; lookups: last duplicate wins (llama.cpp)
    qlora__strtab merges;        // BPE: "left right", rank = index; first duplicate wins
    float    *score;             // [n_vocab] SPM / llama2.c merge priority
    uint8_t  *type;              // [n_vocab] QLORA__TT_*
    int32_t  *special;           // [n_special] ids cut out of raw text, longest text first
    int32_t   n_special;
    int32_t   byte_id[256];      // SPM: id of <0xXX> (or the 1-byte token), -1 if none
    int32_t   bos, eos, unk;     // -1 when absent
    int32_t   eog[8];            // end-of-generation ids (eos, <|im_end|>, <|eot_id|>, ...)
    int       n_eog;
    int       add_bos;           // prepend BOS when qlora_tokenize(add_special=1)
    int       add_space_prefix;  // SPM: "▁" before the text (and removed again when decoding)
    int       chatml;            // vocab has <|im_start|>
    char     *chat_system;       // default system message of the chat template, or NULL
};

static uint32_t qlora__fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= (uint8_t)s[i]; h *= 16777619u; }
    return h;
}
static size_t qlora__strtab_len(const qlora__strtab *t, int32_t i) { return t->off[i + 1] - t->off[i] - 1; }
static const char *qlora__strtab_str(const qlora__strtab *t, int32_t i) { return t->pool + t->off[i]; }
static void qlora__strtab_free(qlora__strtab *t) {
    QLORA__FREE(t->pool); QLORA__FREE(t->off); QLORA__FREE(t->hash); QLORA__FREE(t->slot);
    memset(t, 0, sizeof *t);
}
// Room for n strings of bytes total; then qlora__strtab_set(i = 0, 1, ... in order), qlora__strtab_index.
static int qlora__strtab_alloc(qlora__strtab *t, size_t n, size_t bytes) {
    size_t total;
    memset(t, 0, sizeof *t);
    if (n > (size_t)INT32_MAX / 2 || !qlora__add_ok(bytes, n + 1, &total)) return 0;
    t->n = (int32_t)n;
    t->pool = (char *)QLORA__MALLOC(total);
    t->off = QLORA__CALLOC_T(size_t, n + 1);
    t->hash = QLORA__CALLOC_T(uint32_t, n + 1);
    return t->pool && t->off && t->hash;
}
static void qlora__strtab_set(qlora__strtab *t, int32_t i, const char *s, size_t len) {
    char *dst = t->pool + t->off[i];
    if (len) memcpy(dst, s, len);
    dst[len] = 0;
    t->off[i + 1] = t->off[i] + len + 1;
}
static int32_t qlora__strtab_find(const qlora__strtab *t, const char *s, size_t len) {
    if (!t->slot) return -1;
    uint32_t h = qlora__fnv1a(s, len);
    for (uint32_t k = h & t->mask;; k = (k + 1) & t->mask) {
        int32_t i = t->slot[k];
        if (i < 0) return -1;
        if (t->hash[i] == h && qlora__strtab_len(t, i) == len && !memcmp(qlora__strtab_str(t, i), s, len)) return i;
    }
}
static int qlora__strtab_index(qlora__strtab *t, int last_wins) {
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)t->n) cap *= 2;
    t->mask = cap - 1;
    t->slot = (int32_t *)QLORA__MALLOC((size_t)cap * sizeof(int32_t));
    if (!t->slot) return 0;
    memset(t->slot, 0xff, (size_t)cap * sizeof(int32_t));   // all -1
    for (int32_t i = 0; i < t->n; i++) {
        const char *s = qlora__strtab_str(t, i);
        size_t len = qlora__strtab_len(t, i);
        uint32_t h = t->hash[i] = qlora__fnv1a(s, len), k;
        for (k = h & t->mask; t->slot[k] >= 0; k = (k + 1) & t->mask) {
            int32_t j = t->slot[k];
            if (t->hash[j] == h && qlora__strtab_len(t, j) == len && !memcmp(qlora__strtab_str(t, j), s, len)) break;
        }
        if (t->slot[k] < 0 || last_wins) t->slot[k] = i;
    }
    return 1;
}

// ---- Unicode: UTF-8, the two categories the GPT-2 regex needs, and GPT-2's byte <-> code point map
// Generated by gen/unicode_tables.py from Python unicodedata 14.0.0: 782 ranges of
// {first, last | tag << 24}, tag 1 = \p{L}, 2 = \p{N}. Do not edit by hand.
static const uint32_t qlora__ucat_ranges[782][2] = {
    {0x30,0x2000039}, {0x41,0x100005a}, {0x61,0x100007a}, {0xaa,0x10000aa}, {0xb2,0x20000b3}, {0xb5,0x10000b5},
    {0xb9,0x20000b9}, {0xba,0x10000ba}, {0xbc,0x20000be}, {0xc0,0x10000d6}, {0xd8,0x10000f6}, {0xf8,0x10002c1},
    {0x2c6,0x10002d1}, {0x2e0,0x10002e4}, {0x2ec,0x10002ec}, {0x2ee,0x10002ee}, {0x370,0x1000374}, {0x376,0x1000377},
    {0x37a,0x100037d}, {0x37f,0x100037f}, {0x386,0x1000386}, {0x388,0x100038a}, {0x38c,0x100038c}, {0x38e,0x10003a1},
    {0x3a3,0x10003f5}, {0x3f7,0x1000481}, {0x48a,0x100052f}, {0x531,0x1000556}, {0x559,0x1000559}, {0x560,0x1000588},
    {0x5d0,0x10005ea}, {0x5ef,0x10005f2}, {0x620,0x100064a}, {0x660,0x2000669}, {0x66e,0x100066f}, {0x671,0x10006d3},
    {0x6d5,0x10006d5}, {0x6e5,0x10006e6}, {0x6ee,0x10006ef}, {0x6f0,0x20006f9}, {0x6fa,0x10006fc}, {0x6ff,0x10006ff},
    {0x710,0x1000710}, {0x712,0x100072f}, {0x74d,0x10007a5}, {0x7b1,0x10007b1}, {0x7c0,0x20007c9}, {0x7ca,0x10007ea},
    {0x7f4,0x10007f5}, {0x7fa,0x10007fa}, {0x800,0x1000815}, {0x81a,0x100081a}, {0x824,0x1000824}, {0x828,0x1000828},
    {0x840,0x1000858}, {0x860,0x100086a}, {0x870,0x1000887}, {0x889,0x100088e}, {0x8a0,0x10008c9}, {0x904,0x1000939},
    {0x93d,0x100093d}, {0x950,0x1000950}, {0x958,0x1000961}, {0x966,0x200096f}, {0x971,0x1000980}, {0x985,0x100098c},
    {0x98f,0x1000990}, {0x993,0x10009a8}, {0x9aa,0x10009b0}, {0x9b2,0x10009b2}, {0x9b6,0x10009b9}, {0x9bd,0x10009bd},
    {0x9ce,0x10009ce}, {0x9dc,0x10009dd}, {0x9df,0x10009e1}, {0x9e6,0x20009ef}, {0x9f0,0x10009f1}, {0x9f4,0x20009f9},
    {0x9fc,0x10009fc}, {0xa05,0x1000a0a}, {0xa0f,0x1000a10}, {0xa13,0x1000a28}, {0xa2a,0x1000a30}, {0xa32,0x1000a33},
    {0xa35,0x1000a36}, {0xa38,0x1000a39}, {0xa59,0x1000a5c}, {0xa5e,0x1000a5e}, {0xa66,0x2000a6f}, {0xa72,0x1000a74},
    {0xa85,0x1000a8d}, {0xa8f,0x1000a91}, {0xa93,0x1000aa8}, {0xaaa,0x1000ab0}, {0xab2,0x1000ab3}, {0xab5,0x1000ab9},
    {0xabd,0x1000abd}, {0xad0,0x1000ad0}, {0xae0,0x1000ae1}, {0xae6,0x2000aef}, {0xaf9,0x1000af9}, {0xb05,0x1000b0c},
    {0xb0f,0x1000b10}, {0xb13,0x1000b28}, {0xb2a,0x1000b30}, {0xb32,0x1000b33}, {0xb35,0x1000b39}, {0xb3d,0x1000b3d},
    {0xb5c,0x1000b5d}, {0xb5f,0x1000b61}, {0xb66,0x2000b6f}, {0xb71,0x1000b71}, {0xb72,0x2000b77}, {0xb83,0x1000b83},
    {0xb85,0x1000b8a}, {0xb8e,0x1000b90}, {0xb92,0x1000b95}, {0xb99,0x1000b9a}, {0xb9c,0x1000b9c}, {0xb9e,0x1000b9f},
    {0xba3,0x1000ba4}, {0xba8,0x1000baa}, {0xbae,0x1000bb9}, {0xbd0,0x1000bd0}, {0xbe6,0x2000bf2}, {0xc05,0x1000c0c},
    {0xc0e,0x1000c10}, {0xc12,0x1000c28}, {0xc2a,0x1000c39}, {0xc3d,0x1000c3d}, {0xc58,0x1000c5a}, {0xc5d,0x1000c5d},
    {0xc60,0x1000c61}, {0xc66,0x2000c6f}, {0xc78,0x2000c7e}, {0xc80,0x1000c80}, {0xc85,0x1000c8c}, {0xc8e,0x1000c90},
    {0xc92,0x1000ca8}, {0xcaa,0x1000cb3}, {0xcb5,0x1000cb9}, {0xcbd,0x1000cbd}, {0xcdd,0x1000cde}, {0xce0,0x1000ce1},
    {0xce6,0x2000cef}, {0xcf1,0x1000cf2}, {0xd04,0x1000d0c}, {0xd0e,0x1000d10}, {0xd12,0x1000d3a}, {0xd3d,0x1000d3d},
    {0xd4e,0x1000d4e}, {0xd54,0x1000d56}, {0xd58,0x2000d5e}, {0xd5f,0x1000d61}, {0xd66,0x2000d78}, {0xd7a,0x1000d7f},
    {0xd85,0x1000d96}, {0xd9a,0x1000db1}, {0xdb3,0x1000dbb}, {0xdbd,0x1000dbd}, {0xdc0,0x1000dc6}, {0xde6,0x2000def},
    {0xe01,0x1000e30}, {0xe32,0x1000e33}, {0xe40,0x1000e46}, {0xe50,0x2000e59}, {0xe81,0x1000e82}, {0xe84,0x1000e84},
    {0xe86,0x1000e8a}, {0xe8c,0x1000ea3}, {0xea5,0x1000ea5}, {0xea7,0x1000eb0}, {0xeb2,0x1000eb3}, {0xebd,0x1000ebd},
    {0xec0,0x1000ec4}, {0xec6,0x1000ec6}, {0xed0,0x2000ed9}, {0xedc,0x1000edf}, {0xf00,0x1000f00}, {0xf20,0x2000f33},
    {0xf40,0x1000f47}, {0xf49,0x1000f6c}, {0xf88,0x1000f8c}, {0x1000,0x100102a}, {0x103f,0x100103f}, {0x1040,0x2001049},
    {0x1050,0x1001055}, {0x105a,0x100105d}, {0x1061,0x1001061}, {0x1065,0x1001066}, {0x106e,0x1001070}, {0x1075,0x1001081},
    {0x108e,0x100108e}, {0x1090,0x2001099}, {0x10a0,0x10010c5}, {0x10c7,0x10010c7}, {0x10cd,0x10010cd}, {0x10d0,0x10010fa},
    {0x10fc,0x1001248}, {0x124a,0x100124d}, {0x1250,0x1001256}, {0x1258,0x1001258}, {0x125a,0x100125d}, {0x1260,0x1001288},
    {0x128a,0x100128d}, {0x1290,0x10012b0}, {0x12b2,0x10012b5}, {0x12b8,0x10012be}, {0x12c0,0x10012c0}, {0x12c2,0x10012c5},
    {0x12c8,0x10012d6}, {0x12d8,0x1001310}, {0x1312,0x1001315}, {0x1318,0x100135a}, {0x1369,0x200137c}, {0x1380,0x100138f},
    {0x13a0,0x10013f5}, {0x13f8,0x10013fd}, {0x1401,0x100166c}, {0x166f,0x100167f}, {0x1681,0x100169a}, {0x16a0,0x10016ea},
    {0x16ee,0x20016f0}, {0x16f1,0x10016f8}, {0x1700,0x1001711}, {0x171f,0x1001731}, {0x1740,0x1001751}, {0x1760,0x100176c},
    {0x176e,0x1001770}, {0x1780,0x10017b3}, {0x17d7,0x10017d7}, {0x17dc,0x10017dc}, {0x17e0,0x20017e9}, {0x17f0,0x20017f9},
    {0x1810,0x2001819}, {0x1820,0x1001878}, {0x1880,0x1001884}, {0x1887,0x10018a8}, {0x18aa,0x10018aa}, {0x18b0,0x10018f5},
    {0x1900,0x100191e}, {0x1946,0x200194f}, {0x1950,0x100196d}, {0x1970,0x1001974}, {0x1980,0x10019ab}, {0x19b0,0x10019c9},
    {0x19d0,0x20019da}, {0x1a00,0x1001a16}, {0x1a20,0x1001a54}, {0x1a80,0x2001a89}, {0x1a90,0x2001a99}, {0x1aa7,0x1001aa7},
    {0x1b05,0x1001b33}, {0x1b45,0x1001b4c}, {0x1b50,0x2001b59}, {0x1b83,0x1001ba0}, {0x1bae,0x1001baf}, {0x1bb0,0x2001bb9},
    {0x1bba,0x1001be5}, {0x1c00,0x1001c23}, {0x1c40,0x2001c49}, {0x1c4d,0x1001c4f}, {0x1c50,0x2001c59}, {0x1c5a,0x1001c7d},
    {0x1c80,0x1001c88}, {0x1c90,0x1001cba}, {0x1cbd,0x1001cbf}, {0x1ce9,0x1001cec}, {0x1cee,0x1001cf3}, {0x1cf5,0x1001cf6},
    {0x1cfa,0x1001cfa}, {0x1d00,0x1001dbf}, {0x1e00,0x1001f15}, {0x1f18,0x1001f1d}, {0x1f20,0x1001f45}, {0x1f48,0x1001f4d},
    {0x1f50,0x1001f57}, {0x1f59,0x1001f59}, {0x1f5b,0x1001f5b}, {0x1f5d,0x1001f5d}, {0x1f5f,0x1001f7d}, {0x1f80,0x1001fb4},
    {0x1fb6,0x1001fbc}, {0x1fbe,0x1001fbe}, {0x1fc2,0x1001fc4}, {0x1fc6,0x1001fcc}, {0x1fd0,0x1001fd3}, {0x1fd6,0x1001fdb},
    {0x1fe0,0x1001fec}, {0x1ff2,0x1001ff4}, {0x1ff6,0x1001ffc}, {0x2070,0x2002070}, {0x2071,0x1002071}, {0x2074,0x2002079},
    {0x207f,0x100207f}, {0x2080,0x2002089}, {0x2090,0x100209c}, {0x2102,0x1002102}, {0x2107,0x1002107}, {0x210a,0x1002113},
    {0x2115,0x1002115}, {0x2119,0x100211d}, {0x2124,0x1002124}, {0x2126,0x1002126}, {0x2128,0x1002128}, {0x212a,0x100212d},
    {0x212f,0x1002139}, {0x213c,0x100213f}, {0x2145,0x1002149}, {0x214e,0x100214e}, {0x2150,0x2002182}, {0x2183,0x1002184},
    {0x2185,0x2002189}, {0x2460,0x200249b}, {0x24ea,0x20024ff}, {0x2776,0x2002793}, {0x2c00,0x1002ce4}, {0x2ceb,0x1002cee},
    {0x2cf2,0x1002cf3}, {0x2cfd,0x2002cfd}, {0x2d00,0x1002d25}, {0x2d27,0x1002d27}, {0x2d2d,0x1002d2d}, {0x2d30,0x1002d67},
    {0x2d6f,0x1002d6f}, {0x2d80,0x1002d96}, {0x2da0,0x1002da6}, {0x2da8,0x1002dae}, {0x2db0,0x1002db6}, {0x2db8,0x1002dbe},
    {0x2dc0,0x1002dc6}, {0x2dc8,0x1002dce}, {0x2dd0,0x1002dd6}, {0x2dd8,0x1002dde}, {0x2e2f,0x1002e2f}, {0x3005,0x1003006},
    {0x3007,0x2003007}, {0x3021,0x2003029}, {0x3031,0x1003035}, {0x3038,0x200303a}, {0x303b,0x100303c}, {0x3041,0x1003096},
    {0x309d,0x100309f}, {0x30a1,0x10030fa}, {0x30fc,0x10030ff}, {0x3105,0x100312f}, {0x3131,0x100318e}, {0x3192,0x2003195},
    {0x31a0,0x10031bf}, {0x31f0,0x10031ff}, {0x3220,0x2003229}, {0x3248,0x200324f}, {0x3251,0x200325f}, {0x3280,0x2003289},
    {0x32b1,0x20032bf}, {0x3400,0x1004dbf}, {0x4e00,0x100a48c}, {0xa4d0,0x100a4fd}, {0xa500,0x100a60c}, {0xa610,0x100a61f},
    {0xa620,0x200a629}, {0xa62a,0x100a62b}, {0xa640,0x100a66e}, {0xa67f,0x100a69d}, {0xa6a0,0x100a6e5}, {0xa6e6,0x200a6ef},
    {0xa717,0x100a71f}, {0xa722,0x100a788}, {0xa78b,0x100a7ca}, {0xa7d0,0x100a7d1}, {0xa7d3,0x100a7d3}, {0xa7d5,0x100a7d9},
    {0xa7f2,0x100a801}, {0xa803,0x100a805}, {0xa807,0x100a80a}, {0xa80c,0x100a822}, {0xa830,0x200a835}, {0xa840,0x100a873},
    {0xa882,0x100a8b3}, {0xa8d0,0x200a8d9}, {0xa8f2,0x100a8f7}, {0xa8fb,0x100a8fb}, {0xa8fd,0x100a8fe}, {0xa900,0x200a909},
    {0xa90a,0x100a925}, {0xa930,0x100a946}, {0xa960,0x100a97c}, {0xa984,0x100a9b2}, {0xa9cf,0x100a9cf}, {0xa9d0,0x200a9d9},
    {0xa9e0,0x100a9e4}, {0xa9e6,0x100a9ef}, {0xa9f0,0x200a9f9}, {0xa9fa,0x100a9fe}, {0xaa00,0x100aa28}, {0xaa40,0x100aa42},
    {0xaa44,0x100aa4b}, {0xaa50,0x200aa59}, {0xaa60,0x100aa76}, {0xaa7a,0x100aa7a}, {0xaa7e,0x100aaaf}, {0xaab1,0x100aab1},
    {0xaab5,0x100aab6}, {0xaab9,0x100aabd}, {0xaac0,0x100aac0}, {0xaac2,0x100aac2}, {0xaadb,0x100aadd}, {0xaae0,0x100aaea},
    {0xaaf2,0x100aaf4}, {0xab01,0x100ab06}, {0xab09,0x100ab0e}, {0xab11,0x100ab16}, {0xab20,0x100ab26}, {0xab28,0x100ab2e},
    {0xab30,0x100ab5a}, {0xab5c,0x100ab69}, {0xab70,0x100abe2}, {0xabf0,0x200abf9}, {0xac00,0x100d7a3}, {0xd7b0,0x100d7c6},
    {0xd7cb,0x100d7fb}, {0xf900,0x100fa6d}, {0xfa70,0x100fad9}, {0xfb00,0x100fb06}, {0xfb13,0x100fb17}, {0xfb1d,0x100fb1d},
    {0xfb1f,0x100fb28}, {0xfb2a,0x100fb36}, {0xfb38,0x100fb3c}, {0xfb3e,0x100fb3e}, {0xfb40,0x100fb41}, {0xfb43,0x100fb44},
    {0xfb46,0x100fbb1}, {0xfbd3,0x100fd3d}, {0xfd50,0x100fd8f}, {0xfd92,0x100fdc7}, {0xfdf0,0x100fdfb}, {0xfe70,0x100fe74},
    {0xfe76,0x100fefc}, {0xff10,0x200ff19}, {0xff21,0x100ff3a}, {0xff41,0x100ff5a}, {0xff66,0x100ffbe}, {0xffc2,0x100ffc7},
    {0xffca,0x100ffcf}, {0xffd2,0x100ffd7}, {0xffda,0x100ffdc}, {0x10000,0x101000b}, {0x1000d,0x1010026}, {0x10028,0x101003a},
    {0x1003c,0x101003d}, {0x1003f,0x101004d}, {0x10050,0x101005d}, {0x10080,0x10100fa}, {0x10107,0x2010133}, {0x10140,0x2010178},
    {0x1018a,0x201018b}, {0x10280,0x101029c}, {0x102a0,0x10102d0}, {0x102e1,0x20102fb}, {0x10300,0x101031f}, {0x10320,0x2010323},
    {0x1032d,0x1010340}, {0x10341,0x2010341}, {0x10342,0x1010349}, {0x1034a,0x201034a}, {0x10350,0x1010375}, {0x10380,0x101039d},
    {0x103a0,0x10103c3}, {0x103c8,0x10103cf}, {0x103d1,0x20103d5}, {0x10400,0x101049d}, {0x104a0,0x20104a9}, {0x104b0,0x10104d3},
    {0x104d8,0x10104fb}, {0x10500,0x1010527}, {0x10530,0x1010563}, {0x10570,0x101057a}, {0x1057c,0x101058a}, {0x1058c,0x1010592},
    {0x10594,0x1010595}, {0x10597,0x10105a1}, {0x105a3,0x10105b1}, {0x105b3,0x10105b9}, {0x105bb,0x10105bc}, {0x10600,0x1010736},
    {0x10740,0x1010755}, {0x10760,0x1010767}, {0x10780,0x1010785}, {0x10787,0x10107b0}, {0x107b2,0x10107ba}, {0x10800,0x1010805},
    {0x10808,0x1010808}, {0x1080a,0x1010835}, {0x10837,0x1010838}, {0x1083c,0x101083c}, {0x1083f,0x1010855}, {0x10858,0x201085f},
    {0x10860,0x1010876}, {0x10879,0x201087f}, {0x10880,0x101089e}, {0x108a7,0x20108af}, {0x108e0,0x10108f2}, {0x108f4,0x10108f5},
    {0x108fb,0x20108ff}, {0x10900,0x1010915}, {0x10916,0x201091b}, {0x10920,0x1010939}, {0x10980,0x10109b7}, {0x109bc,0x20109bd},
    {0x109be,0x10109bf}, {0x109c0,0x20109cf}, {0x109d2,0x20109ff}, {0x10a00,0x1010a00}, {0x10a10,0x1010a13}, {0x10a15,0x1010a17},
    {0x10a19,0x1010a35}, {0x10a40,0x2010a48}, {0x10a60,0x1010a7c}, {0x10a7d,0x2010a7e}, {0x10a80,0x1010a9c}, {0x10a9d,0x2010a9f},
    {0x10ac0,0x1010ac7}, {0x10ac9,0x1010ae4}, {0x10aeb,0x2010aef}, {0x10b00,0x1010b35}, {0x10b40,0x1010b55}, {0x10b58,0x2010b5f},
    {0x10b60,0x1010b72}, {0x10b78,0x2010b7f}, {0x10b80,0x1010b91}, {0x10ba9,0x2010baf}, {0x10c00,0x1010c48}, {0x10c80,0x1010cb2},
    {0x10cc0,0x1010cf2}, {0x10cfa,0x2010cff}, {0x10d00,0x1010d23}, {0x10d30,0x2010d39}, {0x10e60,0x2010e7e}, {0x10e80,0x1010ea9},
    {0x10eb0,0x1010eb1}, {0x10f00,0x1010f1c}, {0x10f1d,0x2010f26}, {0x10f27,0x1010f27}, {0x10f30,0x1010f45}, {0x10f51,0x2010f54},
    {0x10f70,0x1010f81}, {0x10fb0,0x1010fc4}, {0x10fc5,0x2010fcb}, {0x10fe0,0x1010ff6}, {0x11003,0x1011037}, {0x11052,0x201106f},
    {0x11071,0x1011072}, {0x11075,0x1011075}, {0x11083,0x10110af}, {0x110d0,0x10110e8}, {0x110f0,0x20110f9}, {0x11103,0x1011126},
    {0x11136,0x201113f}, {0x11144,0x1011144}, {0x11147,0x1011147}, {0x11150,0x1011172}, {0x11176,0x1011176}, {0x11183,0x10111b2},
    {0x111c1,0x10111c4}, {0x111d0,0x20111d9}, {0x111da,0x10111da}, {0x111dc,0x10111dc}, {0x111e1,0x20111f4}, {0x11200,0x1011211},
    {0x11213,0x101122b}, {0x11280,0x1011286}, {0x11288,0x1011288}, {0x1128a,0x101128d}, {0x1128f,0x101129d}, {0x1129f,0x10112a8},
    {0x112b0,0x10112de}, {0x112f0,0x20112f9}, {0x11305,0x101130c}, {0x1130f,0x1011310}, {0x11313,0x1011328}, {0x1132a,0x1011330},
    {0x11332,0x1011333}, {0x11335,0x1011339}, {0x1133d,0x101133d}, {0x11350,0x1011350}, {0x1135d,0x1011361}, {0x11400,0x1011434},
    {0x11447,0x101144a}, {0x11450,0x2011459}, {0x1145f,0x1011461}, {0x11480,0x10114af}, {0x114c4,0x10114c5}, {0x114c7,0x10114c7},
    {0x114d0,0x20114d9}, {0x11580,0x10115ae}, {0x115d8,0x10115db}, {0x11600,0x101162f}, {0x11644,0x1011644}, {0x11650,0x2011659},
    {0x11680,0x10116aa}, {0x116b8,0x10116b8}, {0x116c0,0x20116c9}, {0x11700,0x101171a}, {0x11730,0x201173b}, {0x11740,0x1011746},
    {0x11800,0x101182b}, {0x118a0,0x10118df}, {0x118e0,0x20118f2}, {0x118ff,0x1011906}, {0x11909,0x1011909}, {0x1190c,0x1011913},
    {0x11915,0x1011916}, {0x11918,0x101192f}, {0x1193f,0x101193f}, {0x11941,0x1011941}, {0x11950,0x2011959}, {0x119a0,0x10119a7},
    {0x119aa,0x10119d0}, {0x119e1,0x10119e1}, {0x119e3,0x10119e3}, {0x11a00,0x1011a00}, {0x11a0b,0x1011a32}, {0x11a3a,0x1011a3a},
    {0x11a50,0x1011a50}, {0x11a5c,0x1011a89}, {0x11a9d,0x1011a9d}, {0x11ab0,0x1011af8}, {0x11c00,0x1011c08}, {0x11c0a,0x1011c2e},
    {0x11c40,0x1011c40}, {0x11c50,0x2011c6c}, {0x11c72,0x1011c8f}, {0x11d00,0x1011d06}, {0x11d08,0x1011d09}, {0x11d0b,0x1011d30},
    {0x11d46,0x1011d46}, {0x11d50,0x2011d59}, {0x11d60,0x1011d65}, {0x11d67,0x1011d68}, {0x11d6a,0x1011d89}, {0x11d98,0x1011d98},
    {0x11da0,0x2011da9}, {0x11ee0,0x1011ef2}, {0x11fb0,0x1011fb0}, {0x11fc0,0x2011fd4}, {0x12000,0x1012399}, {0x12400,0x201246e},
    {0x12480,0x1012543}, {0x12f90,0x1012ff0}, {0x13000,0x101342e}, {0x14400,0x1014646}, {0x16800,0x1016a38}, {0x16a40,0x1016a5e},
    {0x16a60,0x2016a69}, {0x16a70,0x1016abe}, {0x16ac0,0x2016ac9}, {0x16ad0,0x1016aed}, {0x16b00,0x1016b2f}, {0x16b40,0x1016b43},
    {0x16b50,0x2016b59}, {0x16b5b,0x2016b61}, {0x16b63,0x1016b77}, {0x16b7d,0x1016b8f}, {0x16e40,0x1016e7f}, {0x16e80,0x2016e96},
    {0x16f00,0x1016f4a}, {0x16f50,0x1016f50}, {0x16f93,0x1016f9f}, {0x16fe0,0x1016fe1}, {0x16fe3,0x1016fe3}, {0x17000,0x10187f7},
    {0x18800,0x1018cd5}, {0x18d00,0x1018d08}, {0x1aff0,0x101aff3}, {0x1aff5,0x101affb}, {0x1affd,0x101affe}, {0x1b000,0x101b122},
    {0x1b150,0x101b152}, {0x1b164,0x101b167}, {0x1b170,0x101b2fb}, {0x1bc00,0x101bc6a}, {0x1bc70,0x101bc7c}, {0x1bc80,0x101bc88},
    {0x1bc90,0x101bc99}, {0x1d2e0,0x201d2f3}, {0x1d360,0x201d378}, {0x1d400,0x101d454}, {0x1d456,0x101d49c}, {0x1d49e,0x101d49f},
    {0x1d4a2,0x101d4a2}, {0x1d4a5,0x101d4a6}, {0x1d4a9,0x101d4ac}, {0x1d4ae,0x101d4b9}, {0x1d4bb,0x101d4bb}, {0x1d4bd,0x101d4c3},
    {0x1d4c5,0x101d505}, {0x1d507,0x101d50a}, {0x1d50d,0x101d514}, {0x1d516,0x101d51c}, {0x1d51e,0x101d539}, {0x1d53b,0x101d53e},
    {0x1d540,0x101d544}, {0x1d546,0x101d546}, {0x1d54a,0x101d550}, {0x1d552,0x101d6a5}, {0x1d6a8,0x101d6c0}, {0x1d6c2,0x101d6da},
    {0x1d6dc,0x101d6fa}, {0x1d6fc,0x101d714}, {0x1d716,0x101d734}, {0x1d736,0x101d74e}, {0x1d750,0x101d76e}, {0x1d770,0x101d788},
    {0x1d78a,0x101d7a8}, {0x1d7aa,0x101d7c2}, {0x1d7c4,0x101d7cb}, {0x1d7ce,0x201d7ff}, {0x1df00,0x101df1e}, {0x1e100,0x101e12c},
    {0x1e137,0x101e13d}, {0x1e140,0x201e149}, {0x1e14e,0x101e14e}, {0x1e290,0x101e2ad}, {0x1e2c0,0x101e2eb}, {0x1e2f0,0x201e2f9},
    {0x1e7e0,0x101e7e6}, {0x1e7e8,0x101e7eb}, {0x1e7ed,0x101e7ee}, {0x1e7f0,0x101e7fe}, {0x1e800,0x101e8c4}, {0x1e8c7,0x201e8cf},
    {0x1e900,0x101e943}, {0x1e94b,0x101e94b}, {0x1e950,0x201e959}, {0x1ec71,0x201ecab}, {0x1ecad,0x201ecaf}, {0x1ecb1,0x201ecb4},
    {0x1ed01,0x201ed2d}, {0x1ed2f,0x201ed3d}, {0x1ee00,0x101ee03}, {0x1ee05,0x101ee1f}, {0x1ee21,0x101ee22}, {0x1ee24,0x101ee24},
    {0x1ee27,0x101ee27}, {0x1ee29,0x101ee32}, {0x1ee34,0x101ee37}, {0x1ee39,0x101ee39}, {0x1ee3b,0x101ee3b}, {0x1ee42,0x101ee42},
    {0x1ee47,0x101ee47}, {0x1ee49,0x101ee49}, {0x1ee4b,0x101ee4b}, {0x1ee4d,0x101ee4f}, {0x1ee51,0x101ee52}, {0x1ee54,0x101ee54},
    {0x1ee57,0x101ee57}, {0x1ee59,0x101ee59}, {0x1ee5b,0x101ee5b}, {0x1ee5d,0x101ee5d}, {0x1ee5f,0x101ee5f}, {0x1ee61,0x101ee62},
    {0x1ee64,0x101ee64}, {0x1ee67,0x101ee6a}, {0x1ee6c,0x101ee72}, {0x1ee74,0x101ee77}, {0x1ee79,0x101ee7c}, {0x1ee7e,0x101ee7e},
    {0x1ee80,0x101ee89}, {0x1ee8b,0x101ee9b}, {0x1eea1,0x101eea3}, {0x1eea5,0x101eea9}, {0x1eeab,0x101eebb}, {0x1f100,0x201f10c},
    {0x1fbf0,0x201fbf9}, {0x20000,0x102a6df}, {0x2a700,0x102b738}, {0x2b740,0x102b81d}, {0x2b820,0x102cea1}, {0x2ceb0,0x102ebe0},
    {0x2f800,0x102fa1d}, {0x30000,0x103134a},
};
// Code point class for the pre-tokenizer: 1 letter \p{L}, 2 number \p{N}, 3 white space \s
// (Unicode White_Space, the set llama.cpp's unicode.cpp uses), 4 anything else.
static int qlora__cpt_class(uint32_t c) {
    if ((c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
        (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000)
        return 3;
    size_t lo = 0, hi = sizeof qlora__ucat_ranges / sizeof qlora__ucat_ranges[0];
    while (lo < hi) {                                   // first range with last >= c
        size_t mid = (lo + hi) / 2;
        if ((qlora__ucat_ranges[mid][1] & 0xffffffu) < c) lo = mid + 1; else hi = mid;
    }
    if (lo < sizeof qlora__ucat_ranges / sizeof qlora__ucat_ranges[0] && qlora__ucat_ranges[lo][0] <= c)
        return (int)(qlora__ucat_ranges[lo][1] >> 24);
    return 4;
}
// Byte length of a UTF-8 sequence from its first byte (llama.cpp unicode_len_utf8: a stray
// continuation byte counts as 1).
static size_t qlora__utf8_len(uint8_t c) {
    static const uint8_t len[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return len[c >> 4];
}
// One code point at s[*i] (llama.cpp unicode_cpt_from_utf8 + unicode_cpts_from_utf8: an invalid
// sequence yields U+FFFD and consumes one byte).
static uint32_t qlora__utf8_next(const uint8_t *s, size_t n, size_t *i) {
    size_t p = *i;
    uint8_t c = s[p];
    if (!(c & 0x80)) { *i = p + 1; return c; }
    if (c & 0x40) {
        size_t k = !(c & 0x20) ? 2 : !(c & 0x10) ? 3 : !(c & 0x08) ? 4 : 0;
        if (k && p + k <= n) {
            uint32_t v = c & (0x7Fu >> k);
            size_t j;
            for (j = 1; j < k && (s[p + j] & 0xC0) == 0x80; j++) v = (v << 6) | (s[p + j] & 0x3Fu);
            if (j == k) { *i = p + k; return v; }
        }
    }
    *i = p + 1;
    return 0xFFFD;
}
// GPT-2 bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// (0-32, 127-160, 173) take code points 256, 257, ... in byte order.
static uint32_t qlora__gpt2_byte_cp(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    return b <= 32 ? 256u + b : b == 173 ? 323u : 289u + (b - 127u);
}
static int qlora__gpt2_cp_byte(uint32_t cp) {            // inverse; -1 if cp is not a byte's
    if (cp < 256) return (cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || cp >= 174 ? (int)cp : -1;
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(cp - 289 + 127);
    return cp == 323 ? 173 : -1;
}

// ---- working memory of one qlora_tokenize call
typedef struct qlora__sym { int32_t prev, next; uint32_t off, n; int32_t id; } qlora__sym;  // text = buf[off, off+n)
typedef struct qlora__bigram { double key; int32_t left, right; uint32_t size; int32_t id; } qlora__bigram;
typedef struct qlora__tokwork {
    qlora__buf     buf;                    // text being merged (qlora__buf from >>safetensors)
    qlora__buf     key;                    // scratch: "left right" merge keys
    qlora__sym    *sym;  size_t nsym, capsym;
    qlora__bigram *heap; size_t nheap, capheap;
    uint32_t      *cpt;  size_t ncpt, capcpt;     // BPE: code points of one fragment
    size_t        *word; size_t nword, capword;   // BPE: word ends (code point index)
    int32_t       *out;  size_t nout, capout;     // result ids
    int            oom;
} qlora__tokwork;

static int qlora__grow(void **p, size_t *cap, size_t need, size_t elem, int *oom) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 16, bytes;
    while (nc < need) nc *= 2;
    void *np = NULL;
    if (!*oom && qlora__mul_ok(nc, elem, &bytes)) np = QLORA__REALLOC(*p, bytes);
    if (!np) { *oom = 1; return 0; }
    *p = np; *cap = nc;
    return 1;
}
#define QLORA__GROW(w, arr, cap, need) qlora__grow((void **)&(w)->arr, &(w)->cap, (need), sizeof *(w)->arr, &(w)->oom)

static void qlora__tok_emit(qlora__tokwork *w, int32_t id) {
    if (QLORA__GROW(w, out, capout, w->nout + 1)) w->out[w->nout++] = id;
}
static void qlora__sym_push(qlora__tokwork *w, uint32_t off, uint32_t n, int32_t id) {
    if (!QLORA__GROW(w, sym, capsym, w->nsym + 1)) return;
    qlora__sym *s = &w->sym[w->nsym];
    s->prev = (int32_t)w->nsym - 1;
    s->next = (int32_t)w->nsym + 1;            // the last one is fixed up by qlora__merge
    s->off = off; s->n = n; s->id = id;
    w->nsym++;
}

// Max-heap on (key, then smaller left): llama.cpp's llm_bigram_spm / llm_bigram_bpe comparators.
static int qlora__bigram_better(const qlora__bigram *a, const qlora__bigram *b) {
    return a->key > b->key || (a->key == b->key && a->left < b->left);
}
static void qlora__heap_push(qlora__tokwork *w, const qlora__bigram *b) {
    if (!QLORA__GROW(w, heap, capheap, w->nheap + 1)) return;
    size_t i = w->nheap++;
    while (i > 0 && qlora__bigram_better(b, &w->heap[(i - 1) / 2])) { w->heap[i] = w->heap[(i - 1) / 2]; i = (i - 1) / 2; }
    w->heap[i] = *b;
}
static qlora__bigram qlora__heap_pop(qlora__tokwork *w) {
    qlora__bigram top = w->heap[0], last = w->heap[--w->nheap];
    size_t i = 0, n = w->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && qlora__bigram_better(&w->heap[c + 1], &w->heap[c])) c++;
        if (!qlora__bigram_better(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

// Queue the pair (l, r) if it can merge. SPM / llama2.c: the concatenated text must be a token;
// priority = its score. BPE: "left right" must be a merge; priority = -rank.
static void qlora__try_pair(const qlora_tokenizer *t, qlora__tokwork *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const qlora__sym *L = &w->sym[l], *R = &w->sym[r];
    const char *text = w->buf.p + L->off;           // L and R are adjacent in buf
    qlora__bigram b;
    b.left = l; b.right = r; b.size = L->n + R->n; b.id = -1;
    if (t->algo == QLORA__ALGO_BPE) {
        w->key.n = 0;
        qlora__buf_put(&w->key, text, L->n);
        qlora__buf_put(&w->key, " ", 1);
        qlora__buf_put(&w->key, text + L->n, R->n);
        if (w->key.oom) { w->oom = 1; return; }
        int32_t rank = qlora__strtab_find(&t->merges, w->key.p, w->key.n);
        if (rank < 0) return;
        b.key = -(double)rank;
    } else {
        int32_t id = qlora__strtab_find(&t->vocab, text, b.size);
        if (id < 0) return;
        // run.c keeps best_score = -1e10f and only takes strictly better pairs
        if (t->algo == QLORA__ALGO_LLAMA2C && !(t->score[id] > -1e10f)) return;
        b.key = t->score[id];
        b.id = id;
    }
    qlora__heap_push(w, &b);
}

// Merge w->sym[0..nsym) best pair first until no pair is left; the survivors are the chain from 0.
static void qlora__merge(const qlora_tokenizer *t, qlora__tokwork *w) {
    if (!w->nsym || w->oom) return;
    w->sym[w->nsym - 1].next = -1;
    w->nheap = 0;
    for (size_t i = 1; i < w->nsym; i++) qlora__try_pair(t, w, (int32_t)i - 1, (int32_t)i);
    while (w->nheap && !w->oom) {
        qlora__bigram b = qlora__heap_pop(w);
        qlora__sym *L = &w->sym[b.left], *R = &w->sym[b.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != b.size) continue;   // stale
        L->n += R->n;
        R->n = 0;
        L->id = b.id;
        L->next = R->next;
        if (R->next >= 0) w->sym[R->next].prev = b.left;
        qlora__try_pair(t, w, L->prev, b.left);
        qlora__try_pair(t, w, b.left, L->next);
    }
}

// SPM (llama.cpp llm_tokenizer_spm_session::tokenize) on one raw fragment.
static void qlora__spm_fragment(const qlora_tokenizer *t, qlora__tokwork *w, const char *text, size_t len, int prefix) {
    static const char sp[3] = { '\xe2', '\x96', '\x81' };       // U+2581 "▁"
    w->buf.n = 0;
    if (prefix) qlora__buf_put(&w->buf, sp, 3);
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') qlora__buf_put(&w->buf, sp, 3); else qlora__buf_put(&w->buf, text + i, 1);
    }
    if (w->buf.oom) { w->oom = 1; return; }
    w->nsym = 0;
    for (size_t off = 0; off < w->buf.n;) {                    // split into UTF-8 characters
        size_t n = QLORA__MIN(qlora__utf8_len((uint8_t)w->buf.p[off]), w->buf.n - off);
        qlora__sym_push(w, (uint32_t)off, (uint32_t)n, qlora__strtab_find(&t->vocab, w->buf.p + off, n));
        off += n;
    }
    qlora__merge(t, w);
    if (w->oom) return;
    for (int32_t i = 0; w->nsym && i != -1; i = w->sym[i].next) {  // resegment
        const qlora__sym *s = &w->sym[i];
        if (s->id >= 0) { qlora__tok_emit(w, s->id); continue; }
        for (uint32_t j = 0; j < s->n; j++) {                  // byte fallback
            int32_t b = t->byte_id[(uint8_t)w->buf.p[s->off + j]];
            qlora__tok_emit(w, b >= 0 ? b : t->unk);
        }
    }
}

// GPT-2 pre-tokenizer on code points [ini, end): llama.cpp unicode_regex_split_custom_gpt2,
// i.e. 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ with the
// look-ahead unable to see past the end of the range. Appends word ends to w->word.
static void qlora__pretok_gpt2(qlora__tokwork *w, size_t ini, size_t end) {
    const uint32_t *c = w->cpt;
#define QLORA__CLS(p) ((p) < end ? qlora__cpt_class(c[p]) : 0)
#define QLORA__WORD(p) do { if (QLORA__GROW(w, word, capword, w->nword + 1)) w->word[w->nword++] = (p); } while (0)
    size_t pos = ini;
    while (pos < end) {
        uint32_t ch = c[pos];
        if (ch == '\'' && pos + 1 < end) {                     // 's 't 'm 'd  're 've 'll
            uint32_t n1 = c[pos + 1], n2 = pos + 2 < end ? c[pos + 2] : 0;
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') { pos += 2; QLORA__WORD(pos); continue; }
            if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) { pos += 3; QLORA__WORD(pos); continue; }
        }
        int f = ch == ' ' ? QLORA__CLS(pos + 1) : QLORA__CLS(pos);
        if (f == 1 || f == 2 || f == 4) {                      //  ?\p{L}+  |  ?\p{N}+  |  ?[^\s\p{L}\p{N}]+
            pos += ch == ' ';
            while (QLORA__CLS(pos) == f) pos++;
            QLORA__WORD(pos);
            continue;
        }
        size_t nws = 0;
        while (QLORA__CLS(pos + nws) == 3) nws++;
        if (nws > 1 && pos + nws < end) { pos += nws - 1; QLORA__WORD(pos); continue; }   // \s+(?!\S)
        pos += nws ? nws : 1;                                  // \s+  (or a lone unmatched char)
        QLORA__WORD(pos);
    }
#undef QLORA__CLS
#undef QLORA__WORD
}

// Byte-level BPE (llama.cpp llm_tokenizer_bpe_session::tokenize) on one raw fragment.
static void qlora__bpe_fragment(const qlora_tokenizer *t, qlora__tokwork *w, const char *text, size_t len) {
    w->ncpt = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = qlora__utf8_next((const uint8_t *)text, len, &i);
        if (QLORA__GROW(w, cpt, capcpt, w->ncpt + 1)) w->cpt[w->ncpt++] = cp;
    }
    w->nword = 0;
    if (t->pre == QLORA__PRE_DIGITS) {                          // \p{N} first: each digit alone
        size_t a = 0;
        for (size_t i = 0; i < w->ncpt && !w->oom; i++) {
            if (qlora__cpt_class(w->cpt[i]) != 2) continue;
            if (i > a) qlora__pretok_gpt2(w, a, i);
            if (QLORA__GROW(w, word, capword, w->nword + 1)) w->word[w->nword++] = i + 1;
            a = i + 1;
        }
        if (a < w->ncpt) qlora__pretok_gpt2(w, a, w->ncpt);
    } else {
        qlora__pretok_gpt2(w, 0, w->ncpt);
    }
    size_t start = 0;
    for (size_t k = 0; k < w->nword && !w->oom; k++) {
        // the word as UTF-8, each byte replaced by its GPT-2 code point: one symbol per byte
        w->buf.n = 0;
        w->nsym = 0;
        for (size_t i = start; i < w->word[k]; i++) {
            char u8[4], ch[4];
            size_t nu = qlora__utf8_put(u8, w->cpt[i]);
            for (size_t j = 0; j < nu; j++) {
                size_t nc = qlora__utf8_put(ch, qlora__gpt2_byte_cp((uint8_t)u8[j]));
                qlora__sym_push(w, (uint32_t)w->buf.n, (uint32_t)nc, -1);
                qlora__buf_put(&w->buf, ch, nc);
            }
        }
        start = w->word[k];
        if (w->buf.oom) w->oom = 1;
        qlora__merge(t, w);
        if (w->oom) return;
        for (int32_t i = 0; w->nsym && i != -1; i = w->sym[i].next) {
            const qlora__sym *s = &w->sym[i];
            int32_t id = qlora__strtab_find(&t->vocab, w->buf.p + s->off, s->n);
            if (id >= 0) { qlora__tok_emit(w, id); continue; }
            for (uint32_t j = 0; j < s->n; j++) {              // llama.cpp: try each byte alone
                int32_t b = qlora__strtab_find(&t->vocab, w->buf.p + s->off + j, 1);
                if (b >= 0) qlora__tok_emit(w, b);
            }
        }
    }
}

// llama2.c run.c encode() (its O(n^2) rescan replaced by the same heap as SPM).
static void qlora__llama2c_encode(const qlora_tokenizer *t, qlora__tokwork *w, const char *text, size_t len, int bos) {
    w->buf.n = 0;
    w->nsym = 0;
#define QLORA__L2C_TOKEN(id_) do { int32_t id__ = (id_); \
        qlora__sym_push(w, (uint32_t)w->buf.n, (uint32_t)qlora__strtab_len(&t->vocab, id__), id__); \
        qlora__buf_put(&w->buf, qlora__strtab_str(&t->vocab, id__), qlora__strtab_len(&t->vocab, id__)); } while (0)
    if (bos && t->bos >= 0) QLORA__L2C_TOKEN(t->bos);
    if (len) {                                                 // add_dummy_prefix
        int32_t sp = qlora__strtab_find(&t->vocab, " ", 1);
        if (sp >= 0) QLORA__L2C_TOKEN(sp);
    }
    for (size_t i = 0; i < len;) {                             // one UTF-8 character (<= 4 bytes) at a time
        size_t n = 1;
        while (i + n < len && n < 4 && ((uint8_t)text[i + n] & 0xC0) == 0x80) n++;
        int32_t id = qlora__strtab_find(&t->vocab, text + i, n);
        if (id >= 0) QLORA__L2C_TOKEN(id);
        else for (size_t j = 0; j < n; j++) {                  // byte fallback: <0xXX> is id byte + 3
            int32_t b = (int32_t)(uint8_t)text[i + j] + 3;
            if (b < t->n_vocab) QLORA__L2C_TOKEN(b);
        }
        i += n;
    }
#undef QLORA__L2C_TOKEN
    if (w->buf.oom) w->oom = 1;
    qlora__merge(t, w);
    for (int32_t i = 0; w->nsym && !w->oom && i != -1; i = w->sym[i].next) qlora__tok_emit(w, w->sym[i].id);
}

// ---- special tokens in raw text (llama.cpp tokenizer_st_partition, parse_special = true)
typedef struct qlora__frag { size_t off, len; int32_t id; } qlora__frag;   // id -1 = raw text

static qlora_result qlora__partition(const qlora_tokenizer *t, const char *text, size_t len, qlora__frag **out, size_t *nout) {
    size_t n = 0, cap = 0;
    qlora__frag *f = NULL;
    int oom = 0;
    if (len) {
        if (!qlora__grow((void **)&f, &cap, 1, sizeof *f, &oom)) return QLORA_ERR_OUT_OF_MEMORY;
        f[0].off = 0; f[0].len = len; f[0].id = -1; n = 1;
    }
    for (int32_t s = 0; s < t->n_special && n; s++) {         // longest special text first
        int32_t id = t->special[s];
        const char *st = qlora__strtab_str(&t->vocab, id);
        size_t sl = qlora__strtab_len(&t->vocab, id);
        // split every raw fragment at each (leftmost, non-overlapping) occurrence of st
        for (size_t k = 0; k < n; k++) {
            if (f[k].id >= 0 || f[k].len < sl) continue;
            const char *p = text + f[k].off, *e = p + f[k].len;
            const char *m = NULL;
            for (const char *q = p; q + sl <= e; q++)
                if (*q == *st && !memcmp(q, st, sl)) { m = q; break; }
            if (!m) continue;
            // replace f[k] by [left?] [token] [right?]; right is examined on the next k
            size_t left = (size_t)(m - p), right = (size_t)(e - m) - sl;
            size_t add = (left > 0) + (right > 0);
            if (!qlora__grow((void **)&f, &cap, n + add, sizeof *f, &oom)) { QLORA__FREE(f); return QLORA_ERR_OUT_OF_MEMORY; }
            memmove(f + k + 1 + add, f + k + 1, (n - k - 1) * sizeof *f);
            size_t base = f[k].off, j = k;
            if (left) { f[j].off = base; f[j].len = left; f[j].id = -1; j++; }
            f[j].off = base + left; f[j].len = sl; f[j].id = id; j++;
            if (right) { f[j].off = base + left + sl; f[j].len = right; f[j].id = -1; }
            n += add;
            k = j - 1;                                         // loop k++ lands on the right part
        }
    }
    *out = f; *nout = n;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_tokenize(const qlora_tokenizer *t, const char *text, size_t len, int add_special,
                                       int32_t *ids, size_t cap, size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!t || (!text && len) || (!ids && cap)) return QLORA_ERR_INVALID_ARG;
    if (!text) text = "";
    if (len == 0) len = strlen(text);                          // 0 = NUL-terminated
    if (len > ((size_t)1 << 30)) return QLORA_ERR_RANGE;       // symbol offsets are 32-bit; split larger texts
    qlora__tokwork w;
    memset(&w, 0, sizeof w);
    qlora_result r = QLORA_OK;
    if (t->algo == QLORA__ALGO_LLAMA2C) {
        qlora__llama2c_encode(t, &w, text, len, add_special && t->add_bos);
    } else {
        qlora__frag *f = NULL;
        size_t nf = 0;
        r = qlora__partition(t, text, len, &f, &nf);
        if (r == QLORA_OK) {
            if (add_special && t->add_bos && t->bos >= 0) qlora__tok_emit(&w, t->bos);
            int prev_special = 1;                              // SPM: "▁" prefix after a special token
            for (size_t k = 0; k < nf && !w.oom; k++) {
                if (f[k].id >= 0) { qlora__tok_emit(&w, f[k].id); prev_special = 1; continue; }
                if (t->algo == QLORA__ALGO_SPM)
                    qlora__spm_fragment(t, &w, text + f[k].off, f[k].len, t->add_space_prefix && prev_special);
                else
                    qlora__bpe_fragment(t, &w, text + f[k].off, f[k].len);
                prev_special = 0;
            }
        }
        QLORA__FREE(f);
    }
    if (r == QLORA_OK && w.oom) r = QLORA_ERR_OUT_OF_MEMORY;
    if (r == QLORA_OK) {
        if (ids && w.nout) memcpy(ids, w.out, QLORA__MIN(cap, w.nout) * sizeof *ids);
        if (n_out) *n_out = w.nout;
        if (w.nout > cap) r = QLORA_ERR_RANGE;                  // *n_out says how many are needed
    }
    QLORA__FREE(w.buf.p); QLORA__FREE(w.key.p); QLORA__FREE(w.sym); QLORA__FREE(w.heap);
    QLORA__FREE(w.cpt); QLORA__FREE(w.word); QLORA__FREE(w.out);
    return r;
}

// ---- decoding
static size_t qlora__put(char *buf, size_t cap, size_t at, const char *s, size_t n) {
    if (at < cap) memcpy(buf + at, s, QLORA__MIN(n, cap - at));
    return at + n;
}
// "<0xXX>" -> XX, else -1
static int qlora__byte_token(const char *s, size_t n) {
    int v = 0;
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        v = v * 16 + (c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1000);
    }
    return v >= 0 ? v : -1;
}

QLORA__DEF size_t qlora_token_to_piece(const qlora_tokenizer *t, int32_t id, char *buf, size_t cap) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    const char *s = qlora__strtab_str(&t->vocab, id);
    size_t n = qlora__strtab_len(&t->vocab, id), o = 0;
    int type = t->type[id];
    if (type == QLORA__TT_USER) return qlora__put(buf, cap, 0, s, n);
    if (type == QLORA__TT_BYTE) {                              // <0xXX> -> that byte
        int b = qlora__byte_token(s, n);
        char c = (char)b;
        return b >= 0 ? qlora__put(buf, cap, 0, &c, 1) : 0;
    }
    if (type != QLORA__TT_NORMAL) return 0;                    // control, unknown, unused: nothing
    if (t->algo == QLORA__ALGO_BPE) {                          // code points back to bytes
        for (size_t i = 0; i < n;) {
            size_t i0 = i;
            int b = qlora__gpt2_cp_byte(qlora__utf8_next((const uint8_t *)s, n, &i));
            if (b >= 0) { char c = (char)b; o = qlora__put(buf, cap, o, &c, 1); }
            else o = qlora__put(buf, cap, o, s + i0, i - i0);
        }
        return o;
    }
    for (size_t i = 0; i < n; i++) {                           // SPM: "▁" -> ' '
        if (i + 2 < n && s[i] == '\xe2' && s[i + 1] == '\x96' && s[i + 2] == '\x81') { o = qlora__put(buf, cap, o, " ", 1); i += 2; }
        else o = qlora__put(buf, cap, o, s + i, 1);
    }
    return o;
}

QLORA__DEF qlora_result qlora_detokenize(const qlora_tokenizer *t, const int32_t *ids, size_t n, char *buf, size_t cap, size_t *len_out) {
    if (len_out) *len_out = 0;
    if (!t || (!ids && n) || (!buf && cap)) return QLORA_ERR_INVALID_ARG;
    // SPM: the space that add_space_prefix put in front of the text is removed from the first
    // piece (the first token, or the first after BOS / control tokens), as llama.cpp's lstrip.
    int strip = t->algo != QLORA__ALGO_BPE && t->add_space_prefix;
    size_t o = 0;
    char tmp[256];
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) return QLORA_ERR_RANGE;
        size_t len = qlora_token_to_piece(t, ids[i], tmp, sizeof tmp);
        char *p = tmp, *big = NULL;
        if (len > sizeof tmp) {                                // an unusually long token
            if (!(big = (char *)QLORA__MALLOC(len))) return QLORA_ERR_OUT_OF_MEMORY;
            qlora_token_to_piece(t, ids[i], big, len);
            p = big;
        }
        if (len == 0 && t->type[ids[i]] != QLORA__TT_NORMAL) continue;   // BOS etc.: strip stays armed
        if (strip && len && p[0] == ' ') { p++; len--; }
        strip = 0;
        o = qlora__put(buf, cap, o, p, len);
        QLORA__FREE(big);
    }
    if (cap) buf[o < cap ? o : cap - 1] = 0;
    if (len_out) *len_out = o;                                 // bytes needed, without the NUL
    return !buf || o < cap ? QLORA_OK : QLORA_ERR_RANGE;
}

// ---- loading
static void qlora__tokenizer_free_parts(qlora_tokenizer *t) {
    qlora__strtab_free(&t->vocab);
    qlora__strtab_free(&t->merges);
    QLORA__FREE(t->score); QLORA__FREE(t->type); QLORA__FREE(t->special); QLORA__FREE(t->chat_system);
}
QLORA__DEF void qlora_tokenizer_free(qlora_tokenizer *t) {
    if (!t) return;
    qlora__tokenizer_free_parts(t);
    QLORA__FREE(t);
}

// A tokenizer with room for n token texts of `bytes` bytes in total (texts set by the caller).
static qlora_tokenizer *qlora__tokenizer_new(size_t n, size_t bytes) {
    qlora_tokenizer *t = QLORA__CALLOC_T(qlora_tokenizer, 1);
    if (!t) return NULL;
    t->n_vocab = (int32_t)n;
    t->bos = t->eos = t->unk = -1;
    t->score = QLORA__CALLOC_T(float, n);
    t->type = QLORA__CALLOC_T(uint8_t, n);
    if (!qlora__strtab_alloc(&t->vocab, n, bytes) || !t->score || !t->type) { qlora_tokenizer_free(t); return NULL; }
    memset(t->type, QLORA__TT_NORMAL, n);
    return t;
}

typedef struct qlora__lenid { size_t len; int32_t id; } qlora__lenid;
static int qlora__lenid_cmp(const void *a, const void *b) {       // longest first, then lower id
    const qlora__lenid *x = (const qlora__lenid *)a, *y = (const qlora__lenid *)b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

// Default system message of a ChatML template: the literal in '<|im_start|>system\n...<|im_end|>'
// (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
static char *qlora__chatml_default_system(const char *tpl, size_t n) {
    static const char mark[] = "<|im_start|>system";
    const char *e = tpl + n;
    for (const char *p = tpl; p + sizeof mark - 1 <= e; p++) {
        if (memcmp(p, mark, sizeof mark - 1)) continue;
        const char *s = p + sizeof mark - 1;
        if (s < e && *s == '\n') s++;
        else if (s + 1 < e && s[0] == '\\' && s[1] == 'n') s += 2;
        else continue;
        const char *q = s;
        while (q + 10 <= e && memcmp(q, "<|im_end|>", 10) && *q != '\'' && *q != '"' && *q != '{' && *q != '\\') q++;
        if (q + 10 <= e && !memcmp(q, "<|im_end|>", 10) && q > s) return qlora__strndup(s, (size_t)(q - s));
    }
    return NULL;
}

// Everything derived from texts/types: hash index, special-token list, byte tokens, EOG set.
static qlora_result qlora__tokenizer_finish(qlora_ctx *ctx, qlora_tokenizer *t, const char *what) {
    static const char *const eog_texts[] = { "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                             "<|endoftext|>", "<EOT>", "<|end_of_text|>" };
    if (!qlora__strtab_index(&t->vocab, 1)) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
    if (t->bos >= t->n_vocab || t->bos < -1) t->bos = -1;
    if (t->eos >= t->n_vocab || t->eos < -1) t->eos = -1;
    if (t->unk >= t->n_vocab || t->unk < -1) t->unk = -1;
    if (t->algo != QLORA__ALGO_LLAMA2C) {
        qlora__lenid *li = QLORA__CALLOC_T(qlora__lenid, (size_t)t->n_vocab);
        if (!li) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
        int32_t n = 0;
        for (int32_t i = 0; i < t->n_vocab; i++) {
            int ty = t->type[i];
            size_t len = qlora__strtab_len(&t->vocab, i);
            if ((ty == QLORA__TT_CONTROL || ty == QLORA__TT_USER || ty == QLORA__TT_UNKNOWN) && len) { li[n].len = len; li[n].id = i; n++; }
        }
        qsort(li, (size_t)n, sizeof *li, qlora__lenid_cmp);
        t->special = QLORA__CALLOC_T(int32_t, (size_t)n);
        if (!t->special) { QLORA__FREE(li); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", what); }
        for (int32_t i = 0; i < n; i++) t->special[i] = li[i].id;
        t->n_special = n;
        QLORA__FREE(li);
    }
    for (int b = 0; b < 256; b++) {                            // llama.cpp byte_to_token (SPM)
        char hex[7], one = (char)b;
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        int32_t id = qlora__strtab_find(&t->vocab, hex, 6);
        t->byte_id[b] = id >= 0 ? id : qlora__strtab_find(&t->vocab, &one, 1);
    }
    t->n_eog = 0;
    if (t->eos >= 0) t->eog[t->n_eog++] = t->eos;
    for (size_t k = 0; k < sizeof eog_texts / sizeof eog_texts[0]; k++) {
        int32_t id = qlora__strtab_find(&t->vocab, eog_texts[k], strlen(eog_texts[k]));
        if (id >= 0 && id != t->eos && t->n_eog < 8) t->eog[t->n_eog++] = id;
    }
    t->chatml = qlora__strtab_find(&t->vocab, "<|im_start|>", 12) >= 0;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_tokenizer_load_llama2c(qlora_ctx *ctx, const char *path, int vocab_size, qlora_tokenizer **out) {
    if (!path || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_tokenizer_load_llama2c: NULL argument");
    *out = NULL;
    qlora_file f;
    qlora_result r = qlora_file_open(ctx, path, &f);
    if (r != QLORA_OK) return r;
    // pass 1: validate and count.  Layout: int32 max_token_length, then per token
    // { float32 score, int32 len, len bytes }. vocab_size <= 0 reads tokens until the end of file.
    size_t p = 4, n = 0, bytes = 0;
    if (f.size < 4) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: too short for a llama2.c tokenizer", path); }
    while ((vocab_size > 0 ? n < (size_t)vocab_size : p < f.size)) {
        if (f.size - p < 8) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: token %zu: truncated header", path, n); }
        uint32_t len = qlora__rd_u32(f.data + p + 4);
        if (len > f.size - p - 8) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: token %zu: length %u past end of file", path, n, len); }
        p += 8 + len; bytes += len; n++;
    }
    if (n < 3 || n > (size_t)INT32_MAX / 2) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: %zu tokens", path, n); }
    qlora_tokenizer *t = qlora__tokenizer_new(n, bytes);
    if (!t) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); }
    t->algo = QLORA__ALGO_LLAMA2C;
    p = 4;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = qlora__rd_u32(f.data + p + 4);
        t->score[i] = qlora__f32_from_bits(qlora__rd_u32(f.data + p));
        qlora__strtab_set(&t->vocab, (int32_t)i, (const char *)f.data + p + 8, len);
        if (qlora__byte_token((const char *)f.data + p + 8, len) >= 0) t->type[i] = QLORA__TT_BYTE;
        p += 8 + len;
    }
    qlora_file_close(&f);
    t->type[0] = QLORA__TT_UNKNOWN;                            // sentencepiece: 0 <unk>, 1 <s>, 2 </s>
    t->type[1] = t->type[2] = QLORA__TT_CONTROL;
    t->unk = 0; t->bos = 1; t->eos = 2;
    t->add_bos = 1; t->add_space_prefix = 1;
    r = qlora__tokenizer_finish(ctx, t, path);
    if (r != QLORA_OK) { qlora_tokenizer_free(t); return r; }
    *out = t;
    return QLORA_OK;
}

static int qlora__str_is(qlora_str s, const char *z) { size_t n = strlen(z); return s.ptr && s.len == n && !memcmp(s.ptr, z, n); }

QLORA__DEF qlora_result qlora_tokenizer_from_gguf(qlora_ctx *ctx, const qlora_gguf *g, qlora_tokenizer **out) {
    static const char *const gpt2_like[] = { "gpt2", "gpt-2", "default", "mpt", "olmo", "jais", "trillion" };
    static const char *const digits_first[] = { "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva" };
    if (!g || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_tokenizer_from_gguf: NULL argument");
    *out = NULL;
    qlora_str model = qlora_gguf_string(g, "tokenizer.ggml.model");
    int algo;
    if (qlora__str_is(model, "llama")) algo = QLORA__ALGO_SPM;
    else if (qlora__str_is(model, "gpt2")) algo = QLORA__ALGO_BPE;
    else return QLORA__ERR(ctx, model.ptr ? QLORA_ERR_UNSUPPORTED : QLORA_ERR_NOT_FOUND,
                           "gguf: tokenizer.ggml.model '%.*s' (supported: llama, gpt2)", (int)QLORA__MIN(model.len, 64), model.ptr ? model.ptr : "");
    int pre = QLORA__PRE_GPT2;
    if (algo == QLORA__ALGO_BPE) {
        qlora_str ps = qlora_gguf_string(g, "tokenizer.ggml.pre");
        int known = !ps.ptr;
        for (size_t k = 0; k < sizeof gpt2_like / sizeof gpt2_like[0]; k++) if (qlora__str_is(ps, gpt2_like[k])) known = 1;
        for (size_t k = 0; k < sizeof digits_first / sizeof digits_first[0]; k++)
            if (qlora__str_is(ps, digits_first[k])) { known = 1; pre = QLORA__PRE_DIGITS; }
        if (!known) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "gguf: tokenizer.ggml.pre '%.*s' has a pre-tokenizer regex qlora.h does not implement",
                                      (int)QLORA__MIN(ps.len, 64), ps.ptr);
    }
    const qlora_gguf_kv *tok = qlora_gguf_find(g, "tokenizer.ggml.tokens");
    if (!tok || tok->type != QLORA_GGUF_ARRAY || tok->arr_type != QLORA_GGUF_STRING || !tok->strs || tok->arr_n < 1 || tok->arr_n > (uint64_t)INT32_MAX / 2)
        return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.tokens missing or not an array of strings");
    size_t n = (size_t)tok->arr_n, bytes = 0;
    for (size_t i = 0; i < n; i++)
        if (!qlora__add_ok(bytes, tok->strs[i].len, &bytes)) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.tokens too large");
    const qlora_gguf_kv *sc = qlora_gguf_find(g, "tokenizer.ggml.scores");
    const qlora_gguf_kv *ty = qlora_gguf_find(g, "tokenizer.ggml.token_type");
    if (sc && (sc->type != QLORA_GGUF_ARRAY || sc->arr_n != n)) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.scores has %llu entries, tokens %zu", (unsigned long long)sc->arr_n, n);
    if (ty && (ty->type != QLORA_GGUF_ARRAY || ty->arr_n != n)) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.token_type has %llu entries, tokens %zu", (unsigned long long)ty->arr_n, n);
    const qlora_gguf_kv *mg = NULL;
    if (algo == QLORA__ALGO_BPE) {
        mg = qlora_gguf_find(g, "tokenizer.ggml.merges");
        if (!mg || mg->type != QLORA_GGUF_ARRAY || mg->arr_type != QLORA_GGUF_STRING || !mg->strs || mg->arr_n > (uint64_t)INT32_MAX / 2)
            return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.merges missing (required for model gpt2)");
    }
    qlora_tokenizer *t = qlora__tokenizer_new(n, bytes);
    if (!t) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf: tokenizer: out of memory");
    t->algo = algo; t->pre = pre;
    for (size_t i = 0; i < n; i++) {
        qlora__strtab_set(&t->vocab, (int32_t)i, tok->strs[i].ptr, tok->strs[i].len);
        if (sc) t->score[i] = (float)qlora_gguf_arr_float(sc, i);
        if (ty) {
            int64_t v = qlora_gguf_arr_int(ty, i);
            t->type[i] = (uint8_t)(v >= 1 && v <= 6 ? v : (int64_t)QLORA__TT_UNUSED);
        }
    }
    if (mg) {
        size_t mb = 0, nm = (size_t)mg->arr_n;
        for (size_t i = 0; i < nm; i++) if (!qlora__add_ok(mb, mg->strs[i].len, &mb)) nm = 0;
        if (!qlora__strtab_alloc(&t->merges, nm, mb)) { qlora_tokenizer_free(t); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf: tokenizer merges: out of memory"); }
        for (size_t i = 0; i < nm; i++) qlora__strtab_set(&t->merges, (int32_t)i, mg->strs[i].ptr, mg->strs[i].len);
        if (!qlora__strtab_index(&t->merges, 0)) { qlora_tokenizer_free(t); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf: tokenizer merges: out of memory"); }
    }
    int spm = algo == QLORA__ALGO_SPM;                          // llama.cpp defaults per vocab type
    t->bos = (int32_t)qlora_gguf_int(g, "tokenizer.ggml.bos_token_id", spm ? 1 : -1);
    t->eos = (int32_t)qlora_gguf_int(g, "tokenizer.ggml.eos_token_id", spm ? 2 : -1);
    t->unk = (int32_t)qlora_gguf_int(g, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
    t->add_bos = qlora_gguf_int(g, "tokenizer.ggml.add_bos_token", spm) != 0;
    t->add_space_prefix = spm && qlora_gguf_int(g, "tokenizer.ggml.add_space_prefix", 1) != 0;
    qlora_str tpl = qlora_gguf_string(g, "tokenizer.chat_template");
    qlora_result r = qlora__tokenizer_finish(ctx, t, "gguf tokenizer");
    if (r == QLORA_OK && t->chatml) {
        t->chat_system = tpl.ptr ? qlora__chatml_default_system(tpl.ptr, tpl.len)
                                 : qlora__strdup("You are a helpful AI assistant named SmolLM, trained by Hugging Face");
        if (!tpl.ptr && !t->chat_system) r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf tokenizer: out of memory");
    }
    if (r != QLORA_OK) { qlora_tokenizer_free(t); return r; }
    *out = t;
    return QLORA_OK;
}

// Hugging Face tokenizer.json. model.type "BPE": with byte_fallback it is a SentencePiece-style
// vocab (llama): encoded with the SPM algorithm, each token's score = -(rank of the merge that
// produces it), which reproduces rank order merging for merges that build vocab tokens.
// Otherwise byte-level BPE with a ByteLevel pre-tokenizer (optionally after Digits). bos/eos and
// chat_template come from tokenizer_config.json next to the file when it exists.
static const char *qlora__hf_token_text(const qlora_json *j) {     // "text" or {"content": "text"}
    if (!j) return NULL;
    if (j->type == QLORA_JSON_STRING) return j->str;
    return j->type == QLORA_JSON_OBJECT ? qlora_json_str(j, "content", NULL) : NULL;
}
static int qlora__hf_find_type(const qlora_json *j, const char *type) {   // anywhere in a pre_tokenizer tree
    if (!j) return 0;
    if (j->type == QLORA_JSON_OBJECT) {
        const char *ty = qlora_json_str(j, "type", NULL);
        if (ty && !strcmp(ty, type)) return 1;
    }
    if (j->type == QLORA_JSON_OBJECT || j->type == QLORA_JSON_ARRAY)
        for (const qlora_json *c = j->child; c; c = c->next) if (qlora__hf_find_type(c, type)) return 1;
    return 0;
}

QLORA__DEF qlora_result qlora_tokenizer_load_hf(qlora_ctx *ctx, const char *path, qlora_tokenizer **out) {
    if (!path || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_tokenizer_load_hf: NULL argument");
    *out = NULL;
    qlora_file f;
    qlora_result r = qlora_file_open(ctx, path, &f);
    if (r != QLORA_OK) return r;
    qlora_json *root = NULL, *cfg = NULL;
    char err[160];
    r = qlora_json_parse((const char *)f.data, f.size, &root, err, sizeof err);
    qlora_file_close(&f);
    if (r != QLORA_OK) return QLORA__ERR(ctx, QLORA_ERR_JSON, "%s: %s", path, err);
    {   // tokenizer_config.json in the same directory (optional)
        const char *slash = strrchr(path, '/');
        size_t dir = slash ? (size_t)(slash - path + 1) : 0;
        char *cp = (char *)QLORA__MALLOC(dir + 32);
        if (cp) {
            memcpy(cp, path, dir);
            strcpy(cp + dir, "tokenizer_config.json");
            qlora_file cf;
            if (qlora_file_open(NULL, cp, &cf) == QLORA_OK) {
                if (qlora_json_parse((const char *)cf.data, cf.size, &cfg, err, sizeof err) != QLORA_OK) cfg = NULL;
                qlora_file_close(&cf);
            }
            QLORA__FREE(cp);
        }
    }
    qlora_tokenizer *t = NULL;
    const qlora_json *model = qlora_json_get(root, "model");
    const qlora_json *vocab = qlora_json_get(model, "vocab");
    const qlora_json *merges = qlora_json_get(model, "merges");
    const qlora_json *added = qlora_json_get(root, "added_tokens");
    const qlora_json *pretok = qlora_json_get(root, "pre_tokenizer");
    const char *mtype = qlora_json_str(model, "type", "BPE");
    const qlora_json *bf = qlora_json_get(model, "byte_fallback");
    int byte_fallback = bf && bf->type == QLORA_JSON_TRUE;
    size_t n = 0, bytes = 0, nm = 0, mbytes = 0;
#define QLORA__HF_FAIL(code, ...) do { r = QLORA__ERR(ctx, code, __VA_ARGS__); goto done; } while (0)
    if (!model || strcmp(mtype, "BPE") || !vocab || vocab->type != QLORA_JSON_OBJECT || !merges || merges->type != QLORA_JSON_ARRAY)
        QLORA__HF_FAIL(QLORA_ERR_UNSUPPORTED, "%s: model.type '%s': only BPE with a vocab object and a merges list is supported", path, mtype);
    if (!byte_fallback && (!qlora__hf_find_type(pretok, "ByteLevel") || qlora__hf_find_type(pretok, "Split")))
        QLORA__HF_FAIL(QLORA_ERR_UNSUPPORTED, "%s: pre_tokenizer: only ByteLevel (optionally after Digits) is supported", path);
    // vocabulary size = largest id + 1 over model.vocab and added_tokens
    for (int pass = 0; pass < 2; pass++) {
        const qlora_json *list = pass ? added : vocab;
        for (const qlora_json *c = list ? list->child : NULL; c; c = c->next) {
            double id = pass ? qlora_json_num(c, "id", -1) : (c->type == QLORA_JSON_NUMBER ? c->num : -1);
            if (!(id >= 0 && id < 16777216.0)) QLORA__HF_FAIL(QLORA_ERR_FORMAT, "%s: %s: bad token id", path, pass ? "added_tokens" : "model.vocab");
            if ((size_t)id + 1 > n) n = (size_t)id + 1;
            bytes += pass ? strlen(qlora_json_str(c, "content", "")) : c->key_len;
        }
    }
    if (!n) QLORA__HF_FAIL(QLORA_ERR_FORMAT, "%s: empty vocabulary", path);
    {   // id -> text (later entries win: added_tokens override model.vocab)
        const char **text = QLORA__CALLOC_T(const char *, n);
        size_t *tlen = QLORA__CALLOC_T(size_t, n);
        uint8_t *ttype = QLORA__CALLOC_T(uint8_t, n);
        if (!text || !tlen || !ttype) { QLORA__FREE(text); QLORA__FREE(tlen); QLORA__FREE(ttype); QLORA__HF_FAIL(QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); }
        for (const qlora_json *c = vocab->child; c; c = c->next) {
            size_t id = (size_t)c->num;
            text[id] = c->key; tlen[id] = c->key_len;
            ttype[id] = byte_fallback && qlora__byte_token(c->key, c->key_len) >= 0 ? QLORA__TT_BYTE : QLORA__TT_NORMAL;
        }
        for (const qlora_json *c = added ? added->child : NULL; c; c = c->next) {
            size_t id = (size_t)qlora_json_num(c, "id", 0);
            const qlora_json *sp = qlora_json_get(c, "special");
            text[id] = qlora_json_str(c, "content", "");
            tlen[id] = strlen(text[id]);
            ttype[id] = sp && sp->type == QLORA_JSON_TRUE ? QLORA__TT_CONTROL : QLORA__TT_USER;
        }
        t = qlora__tokenizer_new(n, bytes);
        if (t) for (size_t i = 0; i < n; i++) {
            qlora__strtab_set(&t->vocab, (int32_t)i, text[i] ? text[i] : "", text[i] ? tlen[i] : 0);
            t->type[i] = text[i] ? ttype[i] : (uint8_t)QLORA__TT_UNUSED;
        }
        QLORA__FREE(text); QLORA__FREE(tlen); QLORA__FREE(ttype);
        if (!t) QLORA__HF_FAIL(QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    t->algo = byte_fallback ? QLORA__ALGO_SPM : QLORA__ALGO_BPE;
    t->pre = qlora__hf_find_type(pretok, "Digits") ? QLORA__PRE_DIGITS : QLORA__PRE_GPT2;
    // merges: "a b" strings or ["a", "b"] pairs
    for (const qlora_json *c = merges->child; c; c = c->next, nm++) {
        const qlora_json *a = qlora_json_at(c, 0), *b = qlora_json_at(c, 1);
        if (c->type == QLORA_JSON_STRING) mbytes += c->len;
        else if (c->type == QLORA_JSON_ARRAY && a && b && a->type == QLORA_JSON_STRING && b->type == QLORA_JSON_STRING) mbytes += a->len + 1 + b->len;
        else QLORA__HF_FAIL(QLORA_ERR_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [a, b]", path, nm);
    }
    if (!qlora__strtab_alloc(&t->merges, nm, mbytes)) QLORA__HF_FAIL(QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    {
        size_t i = 0;
        for (const qlora_json *c = merges->child; c; c = c->next, i++) {
            if (c->type == QLORA_JSON_STRING) { qlora__strtab_set(&t->merges, (int32_t)i, c->str, c->len); continue; }
            const qlora_json *a = qlora_json_at(c, 0), *b = qlora_json_at(c, 1);
            char *dst = t->merges.pool + t->merges.off[i];
            memcpy(dst, a->str, a->len); dst[a->len] = ' '; memcpy(dst + a->len + 1, b->str, b->len);
            dst[a->len + 1 + b->len] = 0;
            t->merges.off[i + 1] = t->merges.off[i] + a->len + 1 + b->len + 1;
        }
    }
    if (!qlora__strtab_index(&t->merges, 0) || !qlora__strtab_index(&t->vocab, 1)) QLORA__HF_FAIL(QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    if (byte_fallback) {   // score of a token = -(rank of the first merge producing it)
        for (int32_t i = 0; i < t->n_vocab; i++) t->score[i] = -1e9f;
        for (int32_t m = t->merges.n - 1; m >= 0; m--) {
            const char *s = qlora__strtab_str(&t->merges, m);
            size_t len = qlora__strtab_len(&t->merges, m);
            const char *sp = len > 1 ? (const char *)memchr(s + 1, ' ', len - 1) : NULL;
            if (!sp) continue;
            char tmp[512];
            size_t la = (size_t)(sp - s), lb = len - la - 1;
            if (la + lb > sizeof tmp) continue;
            memcpy(tmp, s, la); memcpy(tmp + la, sp + 1, lb);
            int32_t id = qlora__strtab_find(&t->vocab, tmp, la + lb);
            if (id >= 0) t->score[id] = -(float)m;
        }
        qlora__strtab_free(&t->merges);
    }
    {
        const char *bos = qlora__hf_token_text(qlora_json_get(cfg, "bos_token"));
        const char *eos = qlora__hf_token_text(qlora_json_get(cfg, "eos_token"));
        const char *unk = qlora_json_str(model, "unk_token", NULL);
        static const char *const bos_try[] = { "<s>", "<|begin_of_text|>", "<|endoftext|>" };
        static const char *const eos_try[] = { "</s>", "<|end_of_text|>", "<|endoftext|>" };
        for (size_t k = 0; !bos && k < 3; k++) if (qlora__strtab_find(&t->vocab, bos_try[k], strlen(bos_try[k])) >= 0) bos = bos_try[k];
        for (size_t k = 0; !eos && k < 3; k++) if (qlora__strtab_find(&t->vocab, eos_try[k], strlen(eos_try[k])) >= 0) eos = eos_try[k];
        t->bos = bos ? qlora__strtab_find(&t->vocab, bos, strlen(bos)) : -1;
        t->eos = eos ? qlora__strtab_find(&t->vocab, eos, strlen(eos)) : -1;
        t->unk = unk ? qlora__strtab_find(&t->vocab, unk, strlen(unk)) : -1;
        const qlora_json *ab = qlora_json_get(cfg, "add_bos_token");
        t->add_bos = ab ? ab->type == QLORA_JSON_TRUE : byte_fallback;
        t->add_space_prefix = byte_fallback;
    }
    r = QLORA_OK;
done:
#undef QLORA__HF_FAIL
    if (r == QLORA_OK) {
        QLORA__FREE(t->vocab.slot); t->vocab.slot = NULL;      // re-indexed by finish
        r = qlora__tokenizer_finish(ctx, t, path);
    }
    if (r == QLORA_OK && t->chatml) {
        const char *tpl = qlora_json_str(cfg, "chat_template", NULL);
        t->chat_system = tpl ? qlora__chatml_default_system(tpl, strlen(tpl))
                             : qlora__strdup("You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    }
    qlora_json_free(root);
    qlora_json_free(cfg);
    if (r != QLORA_OK) { qlora_tokenizer_free(t); return r; }
    *out = t;
    return QLORA_OK;
}

// ---- queries
QLORA__DEF qlora_tok_kind qlora_tokenizer_kind(const qlora_tokenizer *t) { return t && t->algo == QLORA__ALGO_BPE ? QLORA_TOK_BPE : QLORA_TOK_SPM; }
QLORA__DEF int32_t qlora_tokenizer_n_vocab(const qlora_tokenizer *t) { return t ? t->n_vocab : 0; }
QLORA__DEF int32_t qlora_tokenizer_bos(const qlora_tokenizer *t) { return t ? t->bos : -1; }
QLORA__DEF int32_t qlora_tokenizer_eos(const qlora_tokenizer *t) { return t ? t->eos : -1; }
QLORA__DEF int32_t qlora_tokenizer_find(const qlora_tokenizer *t, const char *piece) {
    return t && piece ? qlora__strtab_find(&t->vocab, piece, strlen(piece)) : -1;
}
QLORA__DEF int qlora_tokenizer_is_eog(const qlora_tokenizer *t, int32_t id) {
    for (int i = 0; t && i < t->n_eog; i++) if (t->eog[i] == id) return 1;
    return 0;
}

// ---- chat templates
static size_t qlora__puts(char *buf, size_t cap, size_t at, const char *s) { return qlora__put(buf, cap, at, s, strlen(s)); }

QLORA__DEF size_t qlora_chat_render(const qlora_tokenizer *t, const qlora_chat_msg *msgs, size_t n,
                                    int add_generation_prompt, char *buf, size_t cap) {
    size_t o = 0;
    if (!t || (!msgs && n)) return 0;
    if (t->chatml) {
        // SmolLM2 / ChatML: {% if loop.first and messages[0]['role'] != 'system' %}<default system>{% endif %}
        // then <|im_start|>{role}\n{content}<|im_end|>\n per message, then <|im_start|>assistant\n.
        if (n && t->chat_system && strcmp(msgs[0].role, "system")) {
            o = qlora__puts(buf, cap, o, "<|im_start|>system\n");
            o = qlora__puts(buf, cap, o, t->chat_system);
            o = qlora__puts(buf, cap, o, "<|im_end|>\n");
        }
        for (size_t i = 0; i < n; i++) {
            o = qlora__puts(buf, cap, o, "<|im_start|>");
            o = qlora__puts(buf, cap, o, msgs[i].role);
            o = qlora__puts(buf, cap, o, "\n");
            o = qlora__puts(buf, cap, o, msgs[i].content);
            o = qlora__puts(buf, cap, o, "<|im_end|>\n");
        }
        if (add_generation_prompt) o = qlora__puts(buf, cap, o, "<|im_start|>assistant\n");
    } else {
        // Llama-2 (llama.cpp LLM_CHAT_TEMPLATE_LLAMA_2_SYS): [INST] <<SYS>>\n{system}\n<</SYS>>\n\n
        // {user} [/INST]{assistant}</s>[INST] ... ; BOS comes from the tokenizer.
        int inside = 1;
        o = qlora__puts(buf, cap, o, "[INST] ");
        for (size_t i = 0; i < n; i++) {
            if (!inside) { inside = 1; o = qlora__puts(buf, cap, o, "[INST] "); }
            if (!strcmp(msgs[i].role, "system")) {
                o = qlora__puts(buf, cap, o, "<<SYS>>\n");
                o = qlora__puts(buf, cap, o, msgs[i].content);
                o = qlora__puts(buf, cap, o, "\n<</SYS>>\n\n");
            } else if (!strcmp(msgs[i].role, "user")) {
                o = qlora__puts(buf, cap, o, msgs[i].content);
                o = qlora__puts(buf, cap, o, " [/INST]");
            } else {
                o = qlora__puts(buf, cap, o, msgs[i].content);
                o = qlora__puts(buf, cap, o, "</s>");
                inside = 0;
            }
        }
    }
    if (cap) buf[o < cap ? o : cap - 1] = 0;
    return o;
}
