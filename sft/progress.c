// progress.c — see progress.h.
#include "sft/progress.h"

#include <math.h>
#include <stdio.h>

double progress_eta(double elapsed_s, int64_t steps_done, int64_t steps_left) {
    if (steps_done <= 0) return -1.0;
    if (steps_left < 0) steps_left = 0;
    return elapsed_s / (double)steps_done * (double)steps_left;
}

void progress_hms(char *buf, size_t n, double seconds) {
    if (!(seconds >= 0 && seconds < 1e12)) {  // negative, NaN, Inf or absurdly far
        snprintf(buf, n, "-:--:--");
        return;
    }
    long long s = (long long)llround(seconds);
    snprintf(buf, n, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
}

size_t progress_format(char *buf, size_t n, int64_t step, int64_t max_steps, double loss, double lr,
                       double tokens_per_sec, double eta_s) {
    if (n == 0) return 0;
    char eta[32];
    progress_hms(eta, sizeof eta, eta_s);
    int k = snprintf(buf, n, "step %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | eta %s", (long long)step,
                     (long long)max_steps, loss, lr, tokens_per_sec, eta);
    if (k < 0) {
        buf[0] = 0;
        return 0;
    }
    return (size_t)k < n ? (size_t)k : n - 1;
}
