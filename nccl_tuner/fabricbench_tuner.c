/* fabricbench's NCCL tuner plugin.
 *
 * Reads NCCL_TUNER_CONFIG_FILE (default ./nccl_tuner.conf) in the CSV format of NCCL's example tuner:
 *   collective_type,min_bytes,max_bytes,algorithm,protocol,channels,nNodes,nRanks[,numPipeOps[,regBuff]]
 * '#' lines and empty lines are skipped; -1 is a wildcard (channels -1: keep NCCL's count); sizes inclusive.
 * For each call the first rule that matches (and whose algorithm/protocol NCCL has not ruled out) sets that
 * entry of NCCL's cost table to 0 so NCCL picks it, and sets the channel count. No match: nothing changes.
 * Exports ncclTunerPlugin_v2 .. _v6 so NCCL 2.21 to 2.30 all find a version they know.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tuner_abi.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_LINE 1024
#define MAX_FIELDS 10

typedef struct {
  int coll;
  unsigned long long minBytes, maxBytes;
  int algo, proto, channels, nNodes, nRanks, numPipeOps, regBuff;
} Rule;

typedef struct {
  size_t nRanks, nNodes;
  ncclDebugLogger_t log;
  Rule* rules;
  int nRules;
} Ctx;

#define LOG(ctx, level, ...) \
  do { if ((ctx)->log) (ctx)->log(level, NCCL_TUNING, __FILE__, __LINE__, __VA_ARGS__); } while (0)

static int lookup(const char* s, const char* const* names, int n) {
  for (int i = 0; i < n; i++)
    if (names[i] && strcmp(s, names[i]) == 0) return i;
  return -1;
}

static const char* const COLLS[] = {"broadcast", "reduce", "allgather", "reducescatter", "allreduce"};
static const char* const ALGOS[] = {"tree", "ring", "collnet_direct", "collnet_chain", "nvls", "nvls_tree", "pat"};
static const char* const PROTOS[] = {"ll", "ll128", "simple"};

static char* trim(char* s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = '\0';
  return s;
}

static int parse_int(const char* s, int* out) {
  char* end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end) return -1;
  *out = (int)v;
  return 0;
}

static int parse_u64(const char* s, unsigned long long* out) {
  char* end;
  errno = 0;
  if (*s == '-') return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end) return -1;
  *out = v;
  return 0;
}

/* One CSV line -> rule. Returns 0 on success, -1 for a line to skip (named in the log). */
static int parse_line(char* line, Rule* r) {
  char* fields[MAX_FIELDS];
  int n = 0;
  for (char* tok = strtok(line, ","); tok && n < MAX_FIELDS; tok = strtok(NULL, ",")) fields[n++] = trim(tok);
  if (n < 8) return -1;
  r->coll = lookup(fields[0], COLLS, 5);
  r->algo = lookup(fields[3], ALGOS, 7);
  r->proto = lookup(fields[4], PROTOS, 3);
  if (r->coll < 0 || r->algo < 0 || r->proto < 0) return -1;
  if (parse_u64(fields[1], &r->minBytes) || parse_u64(fields[2], &r->maxBytes)) return -1;
  if (parse_int(fields[5], &r->channels) || parse_int(fields[6], &r->nNodes) || parse_int(fields[7], &r->nRanks))
    return -1;
  r->numPipeOps = -1;
  r->regBuff = -1;
  if (n > 8 && parse_int(fields[8], &r->numPipeOps)) return -1;
  if (n > 9 && parse_int(fields[9], &r->regBuff)) return -1;
  return 0;
}

static void load_rules(Ctx* ctx) {
  const char* path = getenv("NCCL_TUNER_CONFIG_FILE");
  if (!path || !*path) path = "nccl_tuner.conf";
  FILE* f = fopen(path, "r");
  if (!f) {
    LOG(ctx, NCCL_LOG_INFO, "TUNER/fabricbench: cannot open %s (%s); NCCL's own choices stay", path, strerror(errno));
    return;
  }
  char line[MAX_LINE];
  int cap = 0, lineno = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    if (line[0] == '#' || line[0] == '\n' || line[0] == '\r') continue;
    line[strcspn(line, "\n")] = '\0';
    if (*trim(line) == '\0') continue;
    Rule r;
    if (parse_line(line, &r) != 0) {
      LOG(ctx, NCCL_LOG_WARN, "TUNER/fabricbench: %s:%d: not a rule (expected 8-10 CSV fields), skipped", path, lineno);
      continue;
    }
    if (ctx->nRules == cap) {
      cap = cap ? 2 * cap : 16;
      Rule* grown = realloc(ctx->rules, (size_t)cap * sizeof(Rule));
      if (!grown) break;
      ctx->rules = grown;
    }
    ctx->rules[ctx->nRules++] = r;
  }
  fclose(f);
  LOG(ctx, NCCL_LOG_INFO, "TUNER/fabricbench: %d rules from %s (nRanks %zu, nNodes %zu)", ctx->nRules, path,
      ctx->nRanks, ctx->nNodes);
}

static int matches(const Ctx* ctx, const Rule* r, int coll, size_t nBytes, int numPipeOps, int regBuff) {
  return r->coll == coll && nBytes >= r->minBytes && nBytes <= r->maxBytes &&
         (r->nNodes == -1 || (size_t)r->nNodes == ctx->nNodes) &&
         (r->nRanks == -1 || (size_t)r->nRanks == ctx->nRanks) &&
         (r->numPipeOps == -1 || r->numPipeOps == numPipeOps) && (r->regBuff == -1 || r->regBuff == regBuff);
}

static ncclResult_t make_ctx(size_t nRanks, size_t nNodes, ncclDebugLogger_t log, void** context) {
  Ctx* ctx = calloc(1, sizeof(Ctx));
  if (!ctx) return ncclSystemError;
  ctx->nRanks = nRanks;
  ctx->nNodes = nNodes;
  ctx->log = log;
  load_rules(ctx);
  *context = ctx;
  return ncclSuccess;
}

static ncclResult_t init_v2(size_t nRanks, size_t nNodes, ncclDebugLogger_t log, void** context) {
  return make_ctx(nRanks, nNodes, log, context);
}

static ncclResult_t init_v5(void** context, uint64_t commId, size_t nRanks, size_t nNodes, ncclDebugLogger_t log,
                            ncclNvlDomainInfo_v5_t* nvl, ncclTunerConstants_v5_t* constants) {
  (void)commId; (void)nvl; (void)constants;  /* NCCL's model constants are left as NCCL set them */
  return make_ctx(nRanks, nNodes, log, context);
}

/* v3+: edit NCCL's cost table (numAlgo rows x numProto columns, row-major). */
static ncclResult_t get_coll_info(void* context, ncclFunc_t collType, size_t nBytes, int numPipeOps,
                                  float** collCostTable, int numAlgo, int numProto, int regBuff, int* nChannels) {
  Ctx* ctx = context;
  if (!ctx) return ncclInternalError;
  float* table = (float*)collCostTable;
  for (int i = 0; i < ctx->nRules; i++) {
    const Rule* r = &ctx->rules[i];
    if (!matches(ctx, r, (int)collType, nBytes, numPipeOps, regBuff)) continue;
    if (r->algo >= numAlgo || r->proto >= numProto) continue;
    float* cost = &table[r->algo * numProto + r->proto];
    if (*cost == NCCL_ALGO_PROTO_IGNORE) continue; /* NCCL ruled it out here: the next rule may apply */
    *cost = 0.0f;
    if (r->channels > 0) *nChannels = r->channels;
    LOG(ctx, NCCL_LOG_INFO, "TUNER/fabricbench: coll %d, %zu bytes: %s/%s, channels %d (rule %d)", (int)collType,
        nBytes, ALGOS[r->algo], PROTOS[r->proto], r->channels, i + 1);
    return ncclSuccess;
  }
  return ncclSuccess;
}

static ncclResult_t get_coll_info_v3(void* context, ncclFunc_t collType, size_t nBytes, int numPipeOps,
                                     float** collCostTable, int numAlgo, int numProto, int* nChannels) {
  return get_coll_info(context, collType, nBytes, numPipeOps, collCostTable, numAlgo, numProto, 0, nChannels);
}

/* v2: return the algorithm and protocol directly; skip rules NCCL cannot run here (NVLS, CollNet). */
static ncclResult_t get_coll_info_v2(void* context, ncclFunc_t collType, size_t nBytes, int collNetSupport,
                                     int nvlsSupport, int numPipeOps, int* algorithm, int* protocol, int* nChannels) {
  Ctx* ctx = context;
  if (!ctx) return ncclInternalError;
  for (int i = 0; i < ctx->nRules; i++) {
    const Rule* r = &ctx->rules[i];
    if (!matches(ctx, r, (int)collType, nBytes, numPipeOps, 0)) continue;
    if ((r->algo == NCCL_ALGO_NVLS || r->algo == NCCL_ALGO_NVLS_TREE) && !nvlsSupport) continue;
    if ((r->algo == NCCL_ALGO_COLLNET_DIRECT || r->algo == NCCL_ALGO_COLLNET_CHAIN) && !collNetSupport) continue;
    if (r->algo == NCCL_ALGO_PAT) continue; /* PAT arrived in 2.23, after v2 */
    *algorithm = r->algo;
    *protocol = r->proto;
    if (r->channels > 0) *nChannels = r->channels;
    return ncclSuccess;
  }
  return ncclSuccess;
}

static ncclResult_t destroy(void* context) {
  Ctx* ctx = context;
  if (ctx) {
    free(ctx->rules);
    free(ctx);
  }
  return ncclSuccess;
}

#define NAME "fabricbench"
EXPORT const ncclTuner_v6_t ncclTunerPlugin_v6 = {NAME, init_v5, get_coll_info, destroy, NULL};
EXPORT const ncclTuner_v5_t ncclTunerPlugin_v5 = {NAME, init_v5, get_coll_info, destroy};
EXPORT const ncclTuner_v4_t ncclTunerPlugin_v4 = {NAME, init_v2, get_coll_info, destroy};
EXPORT const ncclTuner_v3_t ncclTunerPlugin_v3 = {NAME, init_v2, get_coll_info_v3, destroy};
EXPORT const ncclTuner_v2_t ncclTunerPlugin_v2 = {NAME, init_v2, get_coll_info_v2, destroy};
