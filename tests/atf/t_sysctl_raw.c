/*	SPDX-License-Identifier: BSD-2-Clause	*/

/*
 * t_sysctl_raw: writes to hw.balloon nodes with sizes and values that
 * sysctl(8) never sends.  A quad takes exactly 8 bytes and a bool exactly
 * one byte holding 0 or 1; anything else fails with EINVAL and changes
 * nothing.  Read-only nodes refuse any write with EPERM.
 *
 * On NetBSD the writes go through sysctlbyname(3) to the real module.
 * Elsewhere they go to a simulated domU (balloon-sim, named by the
 * configuration variable balloon_sim), which each test case starts in
 * its work directory and drives through its control socket:
 *
 *	request: the arguments, each followed by a NUL byte, then the
 *	    client shuts down its writing side;
 *	reply: "<status>\n<length of stdout>\n", stdout, then stderr up to
 *	    the end of the stream.
 *
 * "sim sysctl-raw NAME HEX" writes the bytes HEX spells ("-" for none)
 * to NAME; "sysctl -n NAME" reads a value back.
 */

#include <sys/types.h>
#ifdef __NetBSD__
#include <sys/sysctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#else
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#endif

#include <atf-c.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define	QUAD_NODE	"hw.balloon.batch"
#define	BOOL_NODE	"hw.balloon.scrub"
#define	TARGET_NODE	"hw.balloon.target"

static void	dom_start(const atf_tc_t *);
static void	dom_stop(void);
static int	raw_write(const char *, const void *, size_t);
static uint64_t	read_quad(const char *);

/*
 * Starts argv[0] (looked up in PATH) with stdin from /dev/null and stdout
 * and stderr going to file log; returns its pid, or -1 if fork(2) failed.
 */
static pid_t
spawn(const char *const *argv, const char *log)
{
	pid_t pid;
	int fd;

	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd == -1 || dup2(fd, STDOUT_FILENO) == -1 ||
		    dup2(fd, STDERR_FILENO) == -1)
			_exit(126);
		(void)close(fd);
		fd = open("/dev/null", O_RDONLY);
		if (fd != -1)
			(void)dup2(fd, STDIN_FILENO);
		/* execvp(3) takes char *const[]; the strings are not changed. */
		execvp(argv[0], (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	return pid;
}

/* Copies the first line of file path into buf (empty if unreadable). */
static void
first_line(const char *path, char *buf, size_t len)
{
	FILE *f;

	buf[0] = '\0';
	if ((f = fopen(path, "r")) == NULL)
		return;
	if (fgets(buf, (int)len, f) == NULL)
		buf[0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	(void)fclose(f);
}

#ifdef __NetBSD__

/* --- the real module, through sysctlbyname(3) --- */

#define	LOADED_MARK	"loaded-by-test"
#define	SAVED_KNOBS	"saved-knobs"

/*
 * Runs a command to its end; returns its wait status, or -1 (errno set)
 * if it could not be run.  Safe in cleanup routines: it fails nothing.
 */
static int
run(const char *const *argv, const char *log)
{
	pid_t pid;
	int status;

	if ((pid = spawn(argv, log)) == -1)
		return -1;
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return -1;
	return status;
}

static const char *
kmod_path(const atf_tc_t *tc)
{
	static char path[PATH_MAX];
	struct utsname u;
	const char *p;

	if (atf_tc_has_config_var(tc, "balloon_kmod"))
		return atf_tc_get_config_var(tc, "balloon_kmod");
	if ((p = getenv("BALLOON_KMOD")) != NULL && *p != '\0')
		return p;
	ATF_REQUIRE_MSG(uname(&u) == 0, "uname: %s", strerror(errno));
	(void)snprintf(path, sizeof(path),
	    "/stand/%s-xen/%s/modules/balloon/balloon.kmod",
	    u.machine, u.release);
	if (access(path, R_OK) == 0)
		return path;
	(void)snprintf(path, sizeof(path),
	    "/stand/%s/%s/modules/balloon/balloon.kmod",
	    u.machine, u.release);
	return path;
}

static void
dom_start(const atf_tc_t *tc)
{
	static char path[PATH_MAX + 32];
	const char *argv[3];
	const char *kmod;
	size_t len;
	uint64_t batch;
	bool scrub;
	FILE *f;
	int st;

	if (geteuid() != 0)
		atf_tc_skip("needs root");
	/* modload and modunload live in /sbin; keep what PATH has first. */
	(void)snprintf(path, sizeof(path), "%s:/sbin:/usr/sbin",
	    getenv("PATH") != NULL ? getenv("PATH") : "/bin:/usr/bin");
	ATF_REQUIRE_MSG(setenv("PATH", path, 1) == 0, "setenv: %s",
	    strerror(errno));
	/* Created in Xen domUs only, PV and PVH, never in dom0. */
	len = 0;
	if (sysctlbyname("machdep.xen.suspend", NULL, &len, NULL, 0) == -1)
		atf_tc_skip("not a Xen domU (no machdep.xen.suspend)");
	len = sizeof(batch);
	if (sysctlbyname(QUAD_NODE, &batch, &len, NULL, 0) == -1) {
		kmod = kmod_path(tc);
		if (access(kmod, R_OK) == -1)
			atf_tc_skip("balloon.kmod not found at %s (set the "
			    "configuration variable balloon_kmod)", kmod);
		argv[0] = "modload";
		argv[1] = kmod;
		argv[2] = NULL;
		st = run(argv, "modload.log");
		ATF_REQUIRE_MSG(st != -1, "cannot run modload: %s",
		    strerror(errno));
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			char line[256];

			first_line("modload.log", line, sizeof(line));
			atf_tc_skip("cannot load %s: %s", kmod, line);
		}
		f = fopen(LOADED_MARK, "w");
		ATF_REQUIRE_MSG(f != NULL, "%s: %s", LOADED_MARK,
		    strerror(errno));
		(void)fclose(f);
	}
	/* The knobs the cases write, for the cleanup to put back. */
	batch = read_quad(QUAD_NODE);
	len = sizeof(scrub);
	ATF_REQUIRE_MSG(sysctlbyname(BOOL_NODE, &scrub, &len, NULL, 0) == 0,
	    "%s: %s", BOOL_NODE, strerror(errno));
	f = fopen(SAVED_KNOBS, "w");
	ATF_REQUIRE_MSG(f != NULL, "%s: %s", SAVED_KNOBS, strerror(errno));
	fprintf(f, "%" PRIu64 " %d\n", batch, scrub ? 1 : 0);
	ATF_REQUIRE_MSG(fclose(f) == 0, "%s: %s", SAVED_KNOBS,
	    strerror(errno));
}

/* Puts the knobs back and unloads what dom_start() loaded; fails nothing. */
static void
dom_stop(void)
{
	const char *argv[] = { "modunload", "balloon", NULL };
	uint64_t batch;
	int scrub;
	bool b;
	FILE *f;

	if ((f = fopen(SAVED_KNOBS, "r")) != NULL) {
		if (fscanf(f, "%" SCNu64 " %d", &batch, &scrub) == 2) {
			b = scrub != 0;
			(void)sysctlbyname(QUAD_NODE, NULL, NULL, &batch,
			    sizeof(batch));
			(void)sysctlbyname(BOOL_NODE, NULL, NULL, &b,
			    sizeof(b));
		}
		(void)fclose(f);
	}
	if (access(LOADED_MARK, F_OK) == 0)
		(void)run(argv, "modunload.log");
}

static int
raw_write(const char *name, const void *buf, size_t len)
{

	if (sysctlbyname(name, NULL, NULL, buf, len) == -1)
		return errno;
	return 0;
}

static uint64_t
read_quad(const char *name)
{
	uint64_t v;
	size_t len;

	len = sizeof(v);
	ATF_REQUIRE_MSG(sysctlbyname(name, &v, &len, NULL, 0) == 0,
	    "reading %s: %s", name, strerror(errno));
	ATF_REQUIRE_MSG(len == sizeof(v), "%s is %zu bytes, not 8", name,
	    len);
	return v;
}

static bool
read_bool(const char *name)
{
	bool v;
	size_t len;

	len = sizeof(v);
	ATF_REQUIRE_MSG(sysctlbyname(name, &v, &len, NULL, 0) == 0,
	    "reading %s: %s", name, strerror(errno));
	ATF_REQUIRE_MSG(len == sizeof(v), "%s is %zu bytes, not 1", name,
	    len);
	return v;
}

#else /* !__NetBSD__ */

/* --- the simulated domU, through its control socket --- */

#define	PID_FILE	"sim.pid"
#define	SOCK_FILE	"sim.sockpath"
#define	SOCKDIR_FILE	"sim.sockdir"
#define	LOG_FILE	"sim.log"
#define	REPLY_MAX	(64 * 1024)

struct reply {
	int	status;
	char	out[REPLY_MAX];
	char	err[REPLY_MAX];
};

static char sock_path[sizeof(((struct sockaddr_un *)NULL)->sun_path)];

/* Sleeps ms milliseconds. */
static void
nap(long ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		continue;
}

/* What went wrong in the last sim_request() that failed. */
static char sim_error[256];

/*
 * Sends one command (a NULL-terminated argument vector) and fills in r.
 * Returns 0, or an errno with sim_error saying what failed.  It never
 * fails the test case itself: the cleanup routine uses it too, and
 * atf-c's failure functions are for bodies only.
 */
static int
sim_request(const char *const *argv, struct reply *r)
{
	struct sockaddr_un sun;
	static char buf[REPLY_MAX + 64];
	size_t have, len, outlen;
	ssize_t n;
	char *p, *end;
	long v;
	int error, fd, i;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	(void)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1) {
		error = errno;
		(void)snprintf(sim_error, sizeof(sim_error), "socket: %s",
		    strerror(error));
		return error;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		error = errno;
		(void)snprintf(sim_error, sizeof(sim_error),
		    "connect to %s: %s", sock_path, strerror(error));
		(void)close(fd);
		return error;
	}
	for (i = 0; argv[i] != NULL; i++) {
		len = strlen(argv[i]) + 1;
		if ((n = write(fd, argv[i], len)) != (ssize_t)len) {
			error = n == -1 ? errno : EIO;
			(void)snprintf(sim_error, sizeof(sim_error),
			    "writing to %s: %s", sock_path, strerror(error));
			(void)close(fd);
			return error;
		}
	}
	have = 0;
	error = shutdown(fd, SHUT_WR) == -1 ? errno : 0;
	while (error == 0 && (n = read(fd, buf + have,
	    sizeof(buf) - 1 - have)) != 0) {
		if (n == -1) {
			if (errno != EINTR)
				error = errno;
			continue;
		}
		have += (size_t)n;
		if (have == sizeof(buf) - 1)
			error = EFBIG;
	}
	(void)close(fd);
	if (error != 0) {
		(void)snprintf(sim_error, sizeof(sim_error),
		    "reading the reply to %s: %s", argv[0], strerror(error));
		return error;
	}
	buf[have] = '\0';

	/* "<status>\n<stdout length>\n<stdout><stderr>" */
	errno = 0;
	v = strtol(buf, &end, 10);
	if (end == buf || *end != '\n' || errno != 0)
		goto bad;
	r->status = (int)v;
	p = end + 1;
	errno = 0;
	v = strtol(p, &end, 10);
	if (end == p || *end != '\n' || errno != 0 || v < 0)
		goto bad;
	p = end + 1;
	outlen = (size_t)v;
	if (outlen > have - (size_t)(p - buf) || outlen >= sizeof(r->out))
		goto bad;
	memcpy(r->out, p, outlen);
	r->out[outlen] = '\0';
	(void)snprintf(r->err, sizeof(r->err), "%s", p + outlen);
	return 0;
bad:
	(void)snprintf(sim_error, sizeof(sim_error), "bad reply to %s: "
	    "%.60s", argv[0], buf);
	return EPROTO;
}

/* Like sim_request, for a daemon that must be there. */
static void
sim_cmd(const char *const *argv, struct reply *r)
{

	if (sim_request(argv, r) != 0)
		atf_tc_fail("balloon-sim: %s", sim_error);
}

static void
dom_start(const atf_tc_t *tc)
{
	static const char *const ping[] = { "sim", "ping", NULL };
	static struct reply r;
	char cwd[PATH_MAX], dir[] = "/tmp/bsim.XXXXXX", log[256];
	const char *argv[5];
	const char *sim;
	FILE *f;
	pid_t pid;
	int i, n, status;

	/* A daemon that dies mid-reply is an error, not a signal. */
	(void)signal(SIGPIPE, SIG_IGN);
	if (!atf_tc_has_config_var(tc, "balloon_sim"))
		atf_tc_skip("configuration variable balloon_sim is not set "
		    "(kyua -v test_suites.balloon.balloon_sim=PATH)");
	sim = atf_tc_get_config_var(tc, "balloon_sim");
	ATF_REQUIRE_MSG(access(sim, X_OK) == 0,
	    "balloon_sim=%s is not an executable", sim);

	ATF_REQUIRE_MSG(getcwd(cwd, sizeof(cwd)) != NULL, "getcwd: %s",
	    strerror(errno));
	n = snprintf(sock_path, sizeof(sock_path), "%s/sim.sock", cwd);
	if (n < 0 || (size_t)n >= sizeof(sock_path)) {
		/* sun_path is short: a directory of our own in /tmp. */
		ATF_REQUIRE_MSG(mkdtemp(dir) != NULL, "mkdtemp: %s",
		    strerror(errno));
		n = snprintf(sock_path, sizeof(sock_path), "%s/sim.sock",
		    dir);
		ATF_REQUIRE(n > 0 && (size_t)n < sizeof(sock_path));
		f = fopen(SOCKDIR_FILE, "w");
		ATF_REQUIRE_MSG(f != NULL, "%s: %s", SOCKDIR_FILE,
		    strerror(errno));
		fprintf(f, "%s\n", dir);
		(void)fclose(f);
	}
	f = fopen(SOCK_FILE, "w");
	ATF_REQUIRE_MSG(f != NULL, "%s: %s", SOCK_FILE, strerror(errno));
	fprintf(f, "%s\n", sock_path);
	ATF_REQUIRE_MSG(fclose(f) == 0, "%s: %s", SOCK_FILE,
	    strerror(errno));

	argv[0] = sim;
	argv[1] = "daemon";
	argv[2] = "--socket";
	argv[3] = sock_path;
	argv[4] = NULL;
	pid = spawn(argv, LOG_FILE);
	ATF_REQUIRE_MSG(pid != -1, "fork: %s", strerror(errno));
	f = fopen(PID_FILE, "w");
	ATF_REQUIRE_MSG(f != NULL, "%s: %s", PID_FILE, strerror(errno));
	fprintf(f, "%ld\n", (long)pid);
	ATF_REQUIRE_MSG(fclose(f) == 0, "%s: %s", PID_FILE, strerror(errno));

	/* Up to 10 s for the socket to answer. */
	for (i = 0; sim_request(ping, &r) != 0; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			first_line(LOG_FILE, log, sizeof(log));
			atf_tc_fail("balloon-sim daemon exited (status %d): "
			    "%s", status, log);
		}
		ATF_REQUIRE_MSG(i < 200, "balloon-sim did not answer "
		    "within 10 s: %s", sim_error);
		nap(50);
	}
	ATF_REQUIRE_MSG(r.status == 0 && strcmp(r.out, "pong\n") == 0,
	    "sim ping: status %d, %s%s", r.status, r.out, r.err);
}

static void
dom_stop(void)
{
	static const char *const shut[] = { "sim", "shutdown", NULL };
	static struct reply r;
	struct stat sb;
	char dir[PATH_MAX];
	int i;

	/* No atf_tc_fail() and friends here: they are for bodies only. */
	(void)signal(SIGPIPE, SIG_IGN);
	first_line(SOCK_FILE, sock_path, sizeof(sock_path));
	if (sock_path[0] == '\0')
		return;
	/*
	 * A daemon that takes the request removes its socket and exits;
	 * one that cannot be reached is gone already (the test program's
	 * process group ends with its body).
	 */
	if (sim_request(shut, &r) == 0)
		for (i = 0; i < 100 && stat(sock_path, &sb) == 0; i++)
			nap(50);
	first_line(SOCKDIR_FILE, dir, sizeof(dir));
	if (dir[0] != '\0') {
		(void)unlink(sock_path);
		(void)rmdir(dir);
	}
}

/* The errno whose NetBSD strerror(3) text ends stderr's first line. */
static int
errno_of(const char *err)
{
	static const struct {
		const char	*text;
		int		 error;
	} texts[] = {
		{ "Operation not permitted", EPERM },
		{ "No such file or directory", ENOENT },
		{ "Cannot allocate memory", ENOMEM },
		{ "Device busy", EBUSY },
		{ "Invalid argument", EINVAL },
		{ "Result too large", ERANGE },
		{ "Operation not supported", EOPNOTSUPP },
	};
	const char *nl;
	size_t i, len, tl;

	nl = strchr(err, '\n');
	len = nl != NULL ? (size_t)(nl - err) : strlen(err);
	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		tl = strlen(texts[i].text);
		if (len >= tl + 2 && strncmp(err + len - tl - 2, ": ", 2) == 0 &&
		    strncmp(err + len - tl, texts[i].text, tl) == 0)
			return texts[i].error;
	}
	atf_tc_fail("unexpected error message: %.*s", (int)len, err);
	/* NOTREACHED */
	return -1;
}

static int
raw_write(const char *name, const void *buf, size_t len)
{
	static struct reply r;
	const char *argv[5];
	char hex[2 * 64 + 1];
	const unsigned char *b = buf;
	size_t i;

	ATF_REQUIRE(len <= 64);
	if (len == 0)
		(void)snprintf(hex, sizeof(hex), "-");
	for (i = 0; i < len; i++)
		(void)snprintf(hex + 2 * i, 3, "%02x", b[i]);
	argv[0] = "sim";
	argv[1] = "sysctl-raw";
	argv[2] = name;
	argv[3] = hex;
	argv[4] = NULL;
	sim_cmd(argv, &r);
	if (r.status == 0) {
		ATF_REQUIRE_MSG(r.out[0] == '\0' && r.err[0] == '\0',
		    "sim sysctl-raw %s %s printed: %s%s", name, hex, r.out,
		    r.err);
		return 0;
	}
	ATF_REQUIRE_MSG(r.status == 1, "sim sysctl-raw %s %s: status %d: %s",
	    name, hex, r.status, r.err);
	return errno_of(r.err);
}

/* "sysctl -n name", which must succeed. */
static const char *
read_text(const char *name)
{
	static struct reply r;
	const char *argv[] = { "sysctl", "-n", name, NULL };

	sim_cmd(argv, &r);
	ATF_REQUIRE_MSG(r.status == 0, "sysctl -n %s: status %d: %s", name,
	    r.status, r.err);
	r.out[strcspn(r.out, "\n")] = '\0';
	return r.out;
}

static uint64_t
read_quad(const char *name)
{
	const char *s;
	char *end;
	unsigned long long v;

	s = read_text(name);
	errno = 0;
	v = strtoull(s, &end, 10);
	ATF_REQUIRE_MSG(end != s && *end == '\0' && errno == 0,
	    "%s is '%s', not a number", name, s);
	return (uint64_t)v;
}

static bool
read_bool(const char *name)
{
	const char *s;

	s = read_text(name);
	ATF_REQUIRE_MSG(strcmp(s, "0") == 0 || strcmp(s, "1") == 0,
	    "%s is '%s', not a bool", name, s);
	return s[0] == '1';
}

#endif /* __NetBSD__ */

/* --- checks shared by both --- */

/* Writing len bytes of buf to name fails with error. */
static void
write_fails(const char *name, const void *buf, size_t len, int error,
    const char *what)
{
	int got;

	got = raw_write(name, buf, len);
	ATF_CHECK_MSG(got == error, "%s: writing %s (%zu bytes): %s, "
	    "expected %s", name, what, len, got == 0 ? "success" :
	    strerror(got), strerror(error));
}

/* Writing len bytes of buf to name succeeds. */
static void
write_works(const char *name, const void *buf, size_t len, const char *what)
{
	int got;

	got = raw_write(name, buf, len);
	ATF_REQUIRE_MSG(got == 0, "%s: writing %s (%zu bytes): %s", name,
	    what, len, strerror(got));
}

static void
expect_quad(const char *name, uint64_t want)
{
	uint64_t v;

	v = read_quad(name);
	ATF_CHECK_MSG(v == want, "%s is %" PRIu64 ", expected %" PRIu64,
	    name, v, want);
}

static void
expect_bool(const char *name, bool want)
{
	bool v;

	v = read_bool(name);
	ATF_CHECK_MSG(v == want, "%s is %d, expected %d", name, v, want);
}

ATF_TC_WITH_CLEANUP(quad_wrong_size);
ATF_TC_HEAD(quad_wrong_size, tc)
{

	atf_tc_set_md_var(tc, "require.user", "root");
	atf_tc_set_md_var(tc, "descr", "Writes of 4, 1, 16, 7, 9 and 0 "
	    "bytes to a quad node (" QUAD_NODE ") fail with EINVAL and "
	    "change nothing");
}
ATF_TC_BODY(quad_wrong_size, tc)
{
	unsigned char big[16];
	uint64_t before, v;
	uint32_t v32;
	uint8_t v8;

	dom_start(tc);
	before = read_quad(QUAD_NODE);
	ATF_REQUIRE_MSG(before != 256, QUAD_NODE " is 256 already");

	v32 = 256;
	write_fails(QUAD_NODE, &v32, sizeof(v32), EINVAL, "256 as 4 bytes");
	expect_quad(QUAD_NODE, before);
	v8 = 16;
	write_fails(QUAD_NODE, &v8, sizeof(v8), EINVAL, "16 as 1 byte");
	expect_quad(QUAD_NODE, before);
	/* 256 twice: a valid quad followed by 8 more bytes. */
	v = 256;
	memcpy(big, &v, sizeof(v));
	memcpy(big + sizeof(v), &v, sizeof(v));
	write_fails(QUAD_NODE, big, sizeof(big), EINVAL, "16 bytes");
	expect_quad(QUAD_NODE, before);
	write_fails(QUAD_NODE, big, 7, EINVAL, "7 bytes");
	write_fails(QUAD_NODE, big, 9, EINVAL, "9 bytes");
	write_fails(QUAD_NODE, big, 0, EINVAL, "no bytes");
	expect_quad(QUAD_NODE, before);
}
ATF_TC_CLEANUP(quad_wrong_size, tc)
{

	dom_stop();
}

ATF_TC_WITH_CLEANUP(quad_right_size);
ATF_TC_HEAD(quad_right_size, tc)
{

	atf_tc_set_md_var(tc, "require.user", "root");
	atf_tc_set_md_var(tc, "descr", "An 8-byte write to a quad node "
	    "works; the driver still checks the value (EPERM out of range, "
	    "EINVAL negative)");
}
ATF_TC_BODY(quad_right_size, tc)
{
	uint64_t before, v;
	int64_t neg;

	dom_start(tc);
	before = read_quad(QUAD_NODE);
	ATF_REQUIRE_MSG(before != 256, QUAD_NODE " is 256 already");

	v = 256;
	write_works(QUAD_NODE, &v, sizeof(v), "256");
	expect_quad(QUAD_NODE, 256);
	v = 0;
	write_fails(QUAD_NODE, &v, sizeof(v), EPERM, "0");
	v = 65537;
	write_fails(QUAD_NODE, &v, sizeof(v), EPERM, "65537");
	neg = -1;
	write_fails(QUAD_NODE, &neg, sizeof(neg), EINVAL, "-1");
	expect_quad(QUAD_NODE, 256);
	write_works(QUAD_NODE, &before, sizeof(before), "the old value");
	expect_quad(QUAD_NODE, before);
}
ATF_TC_CLEANUP(quad_right_size, tc)
{

	dom_stop();
}

ATF_TC_WITH_CLEANUP(bool_wrong_size);
ATF_TC_HEAD(bool_wrong_size, tc)
{

	atf_tc_set_md_var(tc, "require.user", "root");
	atf_tc_set_md_var(tc, "descr", "Writes of 8, 4, 2 and 0 bytes to a "
	    "bool node (" BOOL_NODE "), and a byte other than 0 or 1, fail "
	    "with EINVAL and change nothing");
}
ATF_TC_BODY(bool_wrong_size, tc)
{
	uint64_t v64;
	uint32_t v32;
	uint8_t b[2];
	bool before;

	dom_start(tc);
	before = read_bool(BOOL_NODE);

	/* Each write asks for the other value, so a taken one shows. */
	v64 = before ? 0 : 1;
	write_fails(BOOL_NODE, &v64, sizeof(v64), EINVAL, "8 bytes");
	expect_bool(BOOL_NODE, before);
	v32 = before ? 0 : 1;
	write_fails(BOOL_NODE, &v32, sizeof(v32), EINVAL, "4 bytes");
	b[0] = b[1] = before ? 0 : 1;
	write_fails(BOOL_NODE, b, 2, EINVAL, "2 bytes");
	write_fails(BOOL_NODE, b, 0, EINVAL, "no bytes");
	expect_bool(BOOL_NODE, before);
	b[0] = 2;
	write_fails(BOOL_NODE, b, 1, EINVAL, "the byte 2");
	b[0] = 0xff;
	write_fails(BOOL_NODE, b, 1, EINVAL, "the byte 0xff");
	expect_bool(BOOL_NODE, before);
}
ATF_TC_CLEANUP(bool_wrong_size, tc)
{

	dom_stop();
}

ATF_TC_WITH_CLEANUP(bool_right_size);
ATF_TC_HEAD(bool_right_size, tc)
{

	atf_tc_set_md_var(tc, "require.user", "root");
	atf_tc_set_md_var(tc, "descr", "One byte of 0 or 1 to a bool node "
	    "works");
}
ATF_TC_BODY(bool_right_size, tc)
{
	uint8_t b;
	bool before;

	dom_start(tc);
	before = read_bool(BOOL_NODE);

	b = before ? 0 : 1;
	write_works(BOOL_NODE, &b, sizeof(b), "the other value");
	expect_bool(BOOL_NODE, !before);
	b = before ? 1 : 0;
	write_works(BOOL_NODE, &b, sizeof(b), "the old value");
	expect_bool(BOOL_NODE, before);
}
ATF_TC_CLEANUP(bool_right_size, tc)
{

	dom_stop();
}

ATF_TC_WITH_CLEANUP(target_wrong_size);
ATF_TC_HEAD(target_wrong_size, tc)
{

	atf_tc_set_md_var(tc, "require.user", "root");
	atf_tc_set_md_var(tc, "descr", "A 4-byte write to hw.balloon.target "
	    "fails with EINVAL and leaves the target; an 8-byte one is "
	    "taken");
}
ATF_TC_BODY(target_wrong_size, tc)
{
	uint64_t target, v;
	uint32_t v32;

	dom_start(tc);

	target = read_quad(TARGET_NODE);
	ATF_REQUIRE_MSG(target > 4096, "target is only %" PRIu64 " KiB",
	    target);
	v32 = (uint32_t)(target - 4096);
	write_fails(TARGET_NODE, &v32, sizeof(v32), EINVAL, "4 bytes");
	expect_quad(TARGET_NODE, target);

	/* 4 MiB down and back, each an 8-byte write. */
	v = target - 4096;
	write_works(TARGET_NODE, &v, sizeof(v), "target - 4 MiB");
	expect_quad(TARGET_NODE, target - 4096);
	v = target;
	write_works(TARGET_NODE, &v, sizeof(v), "target");
	expect_quad(TARGET_NODE, target);
}
ATF_TC_CLEANUP(target_wrong_size, tc)
{

	dom_stop();
}

ATF_TC_WITH_CLEANUP(readonly);
ATF_TC_HEAD(readonly, tc)
{

	atf_tc_set_md_var(tc, "require.user", "root");
	atf_tc_set_md_var(tc, "descr", "Read-only nodes refuse raw writes "
	    "of any size with EPERM");
}
ATF_TC_BODY(readonly, tc)
{
	static const char *const quads[] = {
		"hw.balloon.current", "hw.balloon.max",
		"hw.balloon.ballooned", "hw.balloon.plugged",
		"hw.balloon.stats.hypercalls",
		"hw.balloon.stats.targets_refused",
	};
	uint64_t before, v;
	uint32_t v32;
	size_t i;

	dom_start(tc);

	for (i = 0; i < sizeof(quads) / sizeof(quads[0]); i++) {
		before = read_quad(quads[i]);
		v = before + 4;
		write_fails(quads[i], &v, sizeof(v), EPERM, "8 bytes");
		v32 = 4;
		write_fails(quads[i], &v32, sizeof(v32), EPERM, "4 bytes");
		expect_quad(quads[i], before);
	}
	write_fails("hw.balloon.state", "idle", 5, EPERM, "\"idle\"");
	write_fails("hw.balloon.stats.last_error", "none", 5, EPERM,
	    "\"none\"");
}
ATF_TC_CLEANUP(readonly, tc)
{

	dom_stop();
}

ATF_TP_ADD_TCS(tp)
{

	ATF_TP_ADD_TC(tp, quad_wrong_size);
	ATF_TP_ADD_TC(tp, quad_right_size);
	ATF_TP_ADD_TC(tp, bool_wrong_size);
	ATF_TP_ADD_TC(tp, bool_right_size);
	ATF_TP_ADD_TC(tp, target_wrong_size);
	ATF_TP_ADD_TC(tp, readonly);

	return atf_no_error();
}
