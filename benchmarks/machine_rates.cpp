// The machine's ceilings for the roofline (benchmarks/roofline.py builds and runs this): the
// fused multiply-add rate and the bandwidth of streaming loops at working sets from L1 to
// DRAM, every thread at once, each on its own buffer, as the op's sequences run.
//
//   g++ -O3 -march=native -fopenmp machine_rates.cpp -o machine_rates && ./machine_rates
//
// Prints one JSON object: threads, fma_gflops (float32), and for each working set per thread
// the read bandwidth (a sum over the buffer), the update bandwidth (x = s·x + c in place, the
// access pattern of a trace update: each byte read once and written once), the three-stream
// bandwidth (the forward's fused row loop: per element one array updated in place, as the trace
// is, and two read with it, as α and W are, into a dot product) and the five-stream bandwidth
// (the backward's row passes: per element three arrays read, two read and written in place,
// all five the same length), in GB/s.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

// The widest vector the build's instruction set has registers for. A wider GCC vector than the
// registers (64 bytes on an AVX2 machine) is split into pieces that GCC shuffles through the
// stack, which measured a Zen 3's FMA rate at a tenth of what the op reaches, and its
// bandwidths low with it.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
constexpr int kRegisters = 32;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
constexpr int kRegisters = 16;
#else
constexpr int kVectorBytes = 16;
constexpr int kRegisters = 16;
#endif
typedef float vec __attribute__((vector_size(kVectorBytes)));
constexpr int kLanes = kVectorBytes / sizeof(float);
// Independent FMA chains: enough to cover an FMA's latency (4 cycles) on two ports, as many as
// the registers hold beside the two constants.
constexpr int kChains = kRegisters >= 32 ? 12 : 10;

// Best of `repeats` timings of body(), run by every thread together between barriers.
template <typename Body>
double best_seconds(int repeats, Body body) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    double start = 0, stop = 0;
#pragma omp parallel
    {
#pragma omp barrier
#pragma omp master
      start = omp_get_wtime();
      body(omp_get_thread_num());
#pragma omp barrier
#pragma omp master
      stop = omp_get_wtime();
    }
    best = std::min(best, stop - start);
  }
  return best;
}

volatile float sink;

double fma_gflops(int threads) {
  const long iterations = 20000000;
  const double seconds = best_seconds(5, [&](int) {
    vec acc[kChains];
    for (int k = 0; k < kChains; ++k) acc[k] = vec{} + 1.0f + k * 1e-3f;
    const vec m = vec{} + 0.999999f, c = vec{} + 1e-7f;
    for (long i = 0; i < iterations; ++i)
#pragma GCC unroll 12
      for (int k = 0; k < kChains; ++k) acc[k] = acc[k] * m + c;
    float s = 0;
    for (int k = 0; k < kChains; ++k)
      for (int l = 0; l < kLanes; ++l) s += acc[k][l];
    sink = s;
  });
  return 2.0 * kLanes * kChains * iterations * threads / seconds / 1e9;
}

// Read, update, three-stream and five-stream bandwidth with `bytes` per thread.
void bandwidth(long bytes, int threads, double* read_gbs, double* update_gbs,
               double* three_gbs, double* five_gbs) {
  const long n = bytes / sizeof(vec);
  std::vector<vec*> buffers(threads);
#pragma omp parallel
  {  // each thread allocates and first-touches its own buffer
    const int t = omp_get_thread_num();
    buffers[t] = static_cast<vec*>(std::aligned_alloc(64, n * sizeof(vec)));
    for (long i = 0; i < n; ++i) buffers[t][i] = vec{} + 1.0f;
  }
  // Passes per timing: enough bytes that a timing lasts milliseconds.
  const long passes = std::max(1L, (1L << 30) / bytes);
  const double read_s = best_seconds(5, [&](int t) {
    const vec* x = buffers[t];
    vec s[8] = {};
    for (long p = 0; p < passes; ++p)
      for (long i = 0; i + 8 <= n; i += 8)
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) s[k] += x[i + k];
    float total = 0;
    for (int k = 0; k < 8; ++k) total += s[k][0];
    sink = total;
  });
  const double update_s = best_seconds(5, [&](int t) {
    vec* x = buffers[t];
    const vec m = vec{} + 0.5f, c = vec{} + 0.5f;  // a fixed point: the values stay at 1
    for (long p = 0; p < passes; ++p)
      for (long i = 0; i < n; ++i) x[i] = x[i] * m + c;
  });
  // The same bytes as three arrays, walked together: a[2] stepped in place, then a[0]·a[2] + a[1]
  // summed (the forward's (α·H + W)·p, p aside), into four sums so that their chains of adds
  // do not set the pace. The arrays start 320 bytes apart modulo 4 KiB: at the
  // same offset, each load after a store to an address equal to it modulo 4 KiB waits for that
  // store (at 1.5 MB per thread, arrays of 512 KB, that halved the rate on a Zen 4).
  const long stagger = 320 / kVectorBytes;
  const long m3 = (n - 2 * stagger) / 3 / 4 * 4;
  const double three_s = best_seconds(5, [&](int t) {
    vec* a[3];
    for (int k = 0; k < 3; ++k) a[k] = buffers[t] + k * (m3 + stagger);
    const vec h = vec{} + 0.5f;  // a fixed point: a[2] stays at 1
    vec acc[4] = {};
    for (long p = 0; p < passes; ++p)
      for (long i = 0; i < m3; i += 4)
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const vec x = a[2][i + k] * h + h;
          a[2][i + k] = x;
          acc[k] += a[0][i + k] * x + a[1][i + k];
        }
    sink = acc[0][0] + acc[1][0] + acc[2][0] + acc[3][0];
  });
  // The same bytes as five arrays, walked together: a[0..2] read, a[3], a[4] updated in place
  // (as dL/dH and the dL/dα slab are beside the anchor, α and W).
  const long m5 = n / 5;
  const double five_s = best_seconds(5, [&](int t) {
    vec* a[5];
    for (int k = 0; k < 5; ++k) a[k] = buffers[t] + k * m5;
    const vec third = vec{} + 1.0f / 3, h = vec{} + 0.5f;  // the values stay at about 1
    for (long p = 0; p < passes; ++p)
      for (long i = 0; i < m5; ++i) {
        const vec s = (a[0][i] + a[1][i] + a[2][i]) * third * h;
        a[3][i] = s + a[3][i] * h;
        a[4][i] = s + a[4][i] * h;
      }
  });
  *read_gbs = double(bytes) * passes * threads / read_s / 1e9;
  *update_gbs = 2.0 * bytes * passes * threads / update_s / 1e9;
  *three_gbs = 4.0 * m3 * sizeof(vec) * passes * threads / three_s / 1e9;
  *five_gbs = 7.0 * m5 * sizeof(vec) * passes * threads / five_s / 1e9;
  for (auto b : buffers) std::free(b);
}

int main(int argc, char** argv) {
  const int threads = omp_get_max_threads();
  std::printf("{\"threads\": %d, \"fma_gflops\": %.1f, \"bandwidth\": [", threads, fma_gflops(threads));
  const long sizes[] = {16L << 10, 256L << 10, 1L << 20, 1536L << 10, 4L << 20, 8L << 20, 64L << 20,
                        512L << 20};
  bool first = true;
  for (long bytes : sizes) {
    double read_gbs, update_gbs, three_gbs, five_gbs;
    bandwidth(bytes, threads, &read_gbs, &update_gbs, &three_gbs, &five_gbs);
    std::printf("%s{\"bytes_per_thread\": %ld, \"read_gbs\": %.1f, \"update_gbs\": %.1f, "
                "\"three_stream_gbs\": %.1f, \"five_stream_gbs\": %.1f}",
                first ? "" : ", ", bytes, read_gbs, update_gbs, three_gbs, five_gbs);
    first = false;
    std::fflush(stdout);
  }
  std::printf("]}\n");
  return 0;
}
