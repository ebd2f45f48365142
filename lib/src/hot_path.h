#pragma once

// DINAMO_HOT_PATH marks the per-bin loops that run once per histogram in the daemon. On x86-64
// they are compiled twice, for AVX2 and for the baseline, and the loader picks the one the
// processor runs: four bins per instruction where the divider allows it, two otherwise. FMA is
// not enabled, so both versions compute the same products and sums; only the order in which
// the chi2 reduction adds its lanes differs (a few units in the last place).
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__)
#define DINAMO_HOT_PATH __attribute__((target_clones("avx2", "default")))
#else
#define DINAMO_HOT_PATH
#endif
