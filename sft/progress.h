// progress.h — the training progress line, formatted into a caller buffer (cli/ prints it: with
// \r on a terminal, as plain log lines otherwise). Nothing here prints.
//   "step 12/100 | loss 2.3457 | lr 1.00e-04 | 1234 tok/s | eta 0:01:23"
#ifndef FTK_SFT_PROGRESS_H
#define FTK_SFT_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

// Seconds left at the rate so far: elapsed_s / steps_done * steps_left; -1 when steps_done <= 0.
// Count steps_done from this process's start (a resumed run has not timed the earlier steps).
double progress_eta(double elapsed_s, int64_t steps_done, int64_t steps_left);

// "h:mm:ss" (hours unbounded); "-:--:--" for a negative, non-finite or absurd value.
void progress_hms(char *buf, size_t n, double seconds);

// The line above into buf (size n, always NUL-terminated); returns its length (truncated to n-1).
size_t progress_format(char *buf, size_t n, int64_t step, int64_t max_steps, double loss, double lr,
                       double tokens_per_sec, double eta_s);

#endif
