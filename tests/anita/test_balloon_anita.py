# SPDX-License-Identifier: BSD-2-Clause
#
# Tests of tests/anita/balloon-anita's plan and parsing logic.  They need no
# Xen, xl, NetBSD or anita:
#
#   python3 -m unittest discover -s tests/anita -p 'test_*.py'

import contextlib
import importlib.machinery
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import types
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "balloon-anita")
URL = "https://cdn.netbsd.org/pub/NetBSD/NetBSD-10.1/amd64/"


def load_script():
    loader = importlib.machinery.SourceFileLoader("balloon_anita", SCRIPT)
    spec = importlib.util.spec_from_loader("balloon_anita", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["balloon_anita"] = module
    loader.exec_module(module)
    return module


ba = load_script()


def make_opts(*extra, root=None):
    args = ["--release", URL, "--kmod", "/nonexistent/balloon.kmod",
            "--atf-dir", "/nonexistent/atf", "--workdir", "/w"] + list(extra)
    ns = ba.build_parser().parse_args(args)
    if root is None:
        return ba.options_from_args(ns)
    return ba.options_from_args(ns, root=root)


class SizeTests(unittest.TestCase):
    def test_suffixes(self):
        cases = {
            "512m": 524288, "512M": 524288, "512": 524288, "1g": 1048576,
            "1G": 1048576, "2t": 2 << 30, "4096k": 4096, "4096K": 4096,
            "1048576b": 1024, "1048576B": 1024, "1500b": 1, "1023b": 0,
            "0": 0, "384m": 393216, "256m": 262144,
        }
        for text, kib in cases.items():
            with self.subTest(text=text):
                self.assertEqual(ba.size_to_kib(text), kib)

    def test_no_suffix_means_mib_as_in_xl(self):
        self.assertEqual(ba.size_to_kib("2048"), ba.size_to_kib("2048m"))
        self.assertNotEqual(ba.size_to_kib("2048"), 2048)

    def test_errors(self):
        for bad in ["", "-1m", "+5m", " 512m", "512m ", "512mb", "12.5m", "m",
                    "0x10", "512 m", "1e3", "5p", "9" * 20 + "t", "１２"]:
            with self.subTest(bad=bad):
                with self.assertRaises(ba.UsageError):
                    ba.size_to_kib(bad)
        with self.assertRaises(ba.UsageError):
            ba.size_to_kib(512)

    def test_mem_steps(self):
        self.assertEqual(ba.parse_mem_steps("384m, 512m 256m,512m"),
                         [("384m", 393216), ("512m", 524288),
                          ("256m", 262144), ("512m", 524288)])
        with self.assertRaises(ba.UsageError):
            ba.parse_mem_steps(" , ")
        with self.assertRaises(ba.UsageError):
            ba.parse_mem_steps("384m,x")

    def test_kib_to_text(self):
        self.assertEqual(ba.kib_to_text(524288), "512 MiB")
        self.assertEqual(ba.kib_to_text(2 << 20), "2 GiB")
        self.assertEqual(ba.kib_to_text(1500), "1500 KiB")


class KernelStampTests(unittest.TestCase):
    def test_stamps_are_stripped_as_dmesg_t_would(self):
        self.assertEqual(ba.strip_kernel_stamp("[     1.234568] balloon0: x"),
                         "balloon0: x")
        self.assertEqual(ba.strip_kernel_stamp("[ 12345.000000] a [1.0] b"),
                         "a [1.0] b")
        self.assertEqual(ba.strip_kernel_stamp("balloon0: unloaded"),
                         "balloon0: unloaded")


class ReleaseTests(unittest.TestCase):
    def test_url(self):
        self.assertEqual(ba.release_spec(URL), ("url", URL, "amd64"))
        self.assertEqual(ba.release_spec(URL.rstrip("/")), ("url", URL, "amd64"))

    def test_local_directory(self):
        kind, norm, arch = ba.release_spec("/srv/NetBSD-10.1/amd64")
        self.assertEqual((kind, norm, arch),
                         ("dir", "/srv/NetBSD-10.1/amd64/", "amd64"))
        kind, norm, _ = ba.release_spec("rel/amd64/")
        self.assertEqual(kind, "dir")
        self.assertEqual(norm, os.path.join(os.getcwd(), "rel", "amd64") + "/")

    def test_refused(self):
        for bad in ["", "https://cdn.netbsd.org/pub/NetBSD/NetBSD-10.1/i386/",
                    "https://example.org/NetBSD-10.1-amd64.iso",
                    "https://example.org/", "/"]:
            with self.subTest(bad=bad):
                with self.assertRaises(ba.UsageError):
                    ba.release_spec(bad)


class OptionsTests(unittest.TestCase):
    def test_defaults(self):
        o = make_opts()
        self.assertEqual(o.memory_kib, 512 * 1024)
        self.assertEqual(o.maxmem_kib, 2048 * 1024)
        self.assertEqual([k for _, k in o.mem_steps],
                         [393216, 524288, 262144, 524288])
        self.assertEqual(o.tolerance_kib, 1024)
        self.assertEqual(o.timeout, 120.0)
        self.assertTrue(o.userconf)
        self.assertTrue(o.run_atf)
        self.assertEqual(o.workdir, "/w")
        self.assertEqual(o.warnings, [])

    def test_bounds(self):
        with self.assertRaisesRegex(ba.UsageError, "below --memory"):
            make_opts("--memory", "1g", "--maxmem", "512m")
        with self.assertRaisesRegex(ba.UsageError, "above --maxmem"):
            make_opts("--mem-steps", "384m,4g")
        with self.assertRaisesRegex(ba.UsageError, "whole number of MiB"):
            make_opts("--memory", "1000k")
        with self.assertRaisesRegex(ba.UsageError, "zero"):
            make_opts("--mem-steps", "0")
        with self.assertRaises(ba.UsageError):
            make_opts("--timeout", "0")

    def test_growth_step_warns(self):
        o = make_opts("--mem-steps", "1g,512m")
        self.assertEqual(len(o.warnings), 1)
        self.assertIn("above boot memory", o.warnings[0])

    def test_kmod_search(self):
        with tempfile.TemporaryDirectory() as root:
            opts = make_opts(root=root)  # --kmod given: no search
            self.assertEqual(opts.kmod_searched, [])
            ns = ba.build_parser().parse_args(["--release", URL])
            o = ba.options_from_args(ns, root=root)
            self.assertEqual(o.kmod, os.path.join(
                root, "modules", "balloon", "balloon.kmod"))
            self.assertFalse(os.path.exists(o.kmod))
            objdir = os.path.join(root, "modules", "balloon", "obj.amd64")
            os.makedirs(objdir)
            built = os.path.join(objdir, "balloon.kmod")
            with open(built, "wb") as f:
                f.write(b"\x7fELF")
            o = ba.options_from_args(ns, root=root)
            self.assertEqual(o.kmod, built)
            self.assertEqual(o.kmod_searched[-1],
                             os.path.join(root, "out", "balloon.kmod"))


class PlanTests(unittest.TestCase):
    DEFAULT_NAMES = [
        "check-xl", "check-anita", "check-isotool", "check-kmod", "check-atf",
        "make-payload", "install", "boot", "userconf", "login", "domain",
        "extract", "builtin-check", "install-kmod", "modload", "modstat",
        "sysctl", "atf-build", "atf-run", "atf-results",
        "mem-set-1", "follow-1", "mem-set-2", "follow-2",
        "mem-set-3", "follow-3", "mem-set-4", "follow-4",
        "modunload", "dmesg", "halt", "results",
    ]

    def test_default_order(self):
        steps = ba.plan(make_opts(), domain="anita-42")
        self.assertEqual([s.name for s in steps], self.DEFAULT_NAMES)
        for s in steps:
            self.assertIn(s.where, ("host", "guest", "anita"))
        where = {s.name: s.where for s in steps}
        self.assertEqual(where["check-xl"], "host")
        self.assertEqual(where["install"], "anita")
        self.assertEqual(where["modload"], "guest")
        self.assertEqual(where["mem-set-1"], "host")
        self.assertEqual(where["follow-1"], "guest")

    def test_commands(self):
        steps = {s.name: s for s in ba.plan(make_opts(), domain="anita-42")}
        self.assertEqual(steps["check-xl"].command, ("xl", "info"))
        self.assertEqual(steps["domain"].command, ("xl", "domid", "anita-42"))
        self.assertEqual(
            [steps["mem-set-%d" % i].command for i in range(1, 5)],
            [("xl", "mem-set", "anita-42", s)
             for s in ("384m", "512m", "256m", "512m")])
        self.assertEqual([steps["follow-%d" % i].params["target_kib"]
                          for i in range(1, 5)],
                         [393216, 524288, 262144, 524288])
        self.assertEqual(steps["follow-1"].command,
                         "sysctl -n hw.balloon.current")
        self.assertEqual(steps["follow-1"].params["tolerance_kib"], 1024)
        self.assertEqual(steps["extract"].command,
                         "mkdir -p /var/tmp/balloon && cd /var/tmp/balloon && "
                         "tar -xf /dev/rxbd1d")
        self.assertEqual(steps["modload"].command,
                         "modload /var/tmp/balloon/balloon.kmod")
        self.assertEqual(steps["modunload"].command, "modunload balloon")
        self.assertEqual(steps["atf-build"].command,
                         "cd /var/tmp/balloon/atf && sh build.sh")
        self.assertIn("env BALLOON_MODE=netbsd", steps["atf-run"].command)
        self.assertIn("atf-run > /var/tmp/balloon/results.tps",
                      steps["atf-run"].command)
        self.assertIn("atf-report < /var/tmp/balloon/results.tps",
                      steps["atf-run"].command)
        self.assertIn("cat /var/tmp/balloon/results.tps",
                      steps["atf-results"].command)
        boot = steps["boot"]
        self.assertEqual(boot.params["vmm_args"], [
            "maxmem=2048", 'extra="-c"',
            "disk=file:/w/balloon-payload.img,xvdb,r"])
        self.assertEqual(boot.params["ctor_vmm_args"], [])
        self.assertIn("vmm='xl'", boot.command)
        self.assertIn("anita.URL(%r)" % URL, steps["install"].command)
        self.assertIn("memory_size='512M'", steps["install"].command)
        self.assertEqual(steps["userconf"].params["lines"],
                         ["disable balloon", "quit"])
        self.assertEqual(steps["make-payload"].params["members"], [
            ("/nonexistent/balloon.kmod", "balloon.kmod"),
            ("/nonexistent/atf", "atf")])

    def test_without_optional_parts(self):
        opts = make_opts("--no-atf", "--no-userconf")
        steps = ba.plan(opts, domain="anita-1")
        names = [s.name for s in steps]
        for gone in ("check-atf", "atf-build", "atf-run", "atf-results",
                     "userconf"):
            self.assertNotIn(gone, names)
        self.assertEqual(names[:6], ["check-xl", "check-anita",
                                     "check-isotool", "check-kmod",
                                     "make-payload", "install"])
        boot = [s for s in steps if s.name == "boot"][0]
        self.assertEqual(boot.params["vmm_args"], [
            "maxmem=2048", "disk=file:/w/balloon-payload.img,xvdb,r"])
        payload = [s for s in steps if s.name == "make-payload"][0]
        self.assertEqual(payload.params["members"],
                         [("/nonexistent/balloon.kmod", "balloon.kmod")])

    def test_kernel_and_restore(self):
        opts = make_opts("--kernel", "/k/netbsd-XEN3_DOMU_HOTPLUG.gz",
                         "--mem-steps", "256m,384", "--memory", "512",
                         "--maxmem", "1g")
        steps = ba.plan(opts, domain="anita-7")
        names = [s.name for s in steps]
        self.assertIn("check-kernel", names)
        self.assertLess(names.index("check-kernel"), names.index("install"))
        boot = steps[names.index("boot")]
        self.assertEqual(boot.params["ctor_vmm_args"],
                         ['kernel="/k/netbsd-XEN3_DOMU_HOTPLUG.gz"'])
        self.assertIn("maxmem=1024", boot.params["vmm_args"])
        # The last step is not boot memory: one more step goes back to it.
        self.assertEqual(names[names.index("sysctl") + 4:
                               names.index("modunload")],
                         ["mem-set-1", "follow-1", "mem-set-2", "follow-2",
                          "mem-set-restore", "follow-restore"])
        restore = steps[names.index("mem-set-restore")]
        self.assertEqual(restore.command, ("xl", "mem-set", "anita-7", "512m"))
        self.assertFalse(steps[names.index("follow-restore")]
                         .params["counted"])
        self.assertTrue(steps[names.index("follow-1")].params["counted"])

    def test_format_plan(self):
        lines = ba.format_plan(ba.plan(make_opts(), domain="anita-3"))
        self.assertTrue(lines[0].startswith(" 1. [host ] check-xl: xl info"))
        self.assertIn("xl mem-set anita-3 384m", "\n".join(lines))

    def test_capture_command_runs_in_sh(self):
        line = ba.guest_capture_command("echo hi; echo err >&2; false",
                                        "==B-BEGIN==", "==B-END==")
        self.assertNotIn("==B-BEGIN==", line)
        self.assertNotIn("==B-END==", line)
        p = subprocess.run(["/bin/sh", "-c", line], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr, "")
        self.assertEqual(ba.extract_between_markers(
            "$ " + line + "\r\n" + p.stdout.replace("\n", "\r\n"),
            "==B-BEGIN==", "==B-END=="), "hi\nerr")


class DryRunTests(unittest.TestCase):
    def run_script(self, *args):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        return subprocess.run([sys.executable, "-W", "error", SCRIPT] +
                              list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True,
                              env=env, cwd=HERE)

    def test_dry_run_prints_plan(self):
        with tempfile.TemporaryDirectory() as tmp:
            work = os.path.join(tmp, "work")
            p = self.run_script("--release", URL, "--kmod", "/nonexistent",
                                "--workdir", work, "--dry-run")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr, "")
            out = p.stdout
            self.assertIn("dry run", out)
            self.assertIn("balloon.kmod not found (/nonexistent)", out)
            self.assertIn("[host ] check-xl: xl info", out)
            self.assertRegex(out, r"\[host \] mem-set-1: xl mem-set anita-\d+ "
                             r"384m")
            self.assertIn("[guest] extract: mkdir -p /var/tmp/balloon && cd "
                          "/var/tmp/balloon && tar -xf /dev/rxbd1d", out)
            self.assertIn("[guest] modload: modload "
                          "/var/tmp/balloon/balloon.kmod", out)
            self.assertIn("[guest] follow-4: sysctl -n hw.balloon.current",
                          out)
            self.assertIn("[anita] install: anita.Anita(anita.URL(", out)
            self.assertIn("disk=file:%s/balloon-payload.img,xvdb,r" % work,
                          out)
            self.assertIn("plan (32 steps):", out)
            # Nothing was made.
            self.assertFalse(os.path.exists(work))

    def test_dry_run_in_process_imports_no_anita(self):
        had = "anita" in sys.modules
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = ba.main(["--release", URL, "--kmod", "/nonexistent",
                          "--workdir", "/nonexistent/w", "--dry-run"])
        self.assertEqual(rc, 0)
        self.assertIn("results would go to /nonexistent/w/", buf.getvalue())
        if not had:
            self.assertNotIn("anita", sys.modules)
            self.assertNotIn("pexpect", sys.modules)

    def test_bad_option_exits_2(self):
        p = self.run_script("--release", URL, "--memory", "12x", "--dry-run")
        self.assertEqual(p.returncode, 2)
        self.assertIn("invalid size '12x'", p.stderr)
        p = self.run_script("--dry-run")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--release", p.stderr)


TPS_GOOD = """\
Content-Type: application/X-atf-tps; version="3"

info: atf.version, atf 0.21
info: tests.root, /var/tmp/balloon/atf
info: time.start, Mon May  4 10:00:00 UTC 2026
tps-count: 2
tp-start: 1777888800.5123, t_load, 3
tc-start: 1777888800.6, load_unload
tc-so:loaded
tc-end: 1777888801.12, load_unload, passed
tc-start: 1777888801.2, sysctl_tree
tc-end: 1777888801.9, sysctl_tree, skipped, not on a PVH guest, see README
tc-start: 1777888802.0, known_bug
tc-end: 1777888802.5, known_bug, expected_failure, PR 1234: off by one
tp-end: 1777888802.6, t_load
tp-start: 1777888803.0, t_target, 1
tc-start: 1777888803.1, shrink
tc-se:target 262144, current 300000
tc-end: 1777888833.1, shrink, failed, current 300000 KiB, want 262144 KiB
tp-end: 1777888833.2, t_target
info: time.end, Mon May  4 10:01:00 UTC 2026
"""


class TPSTests(unittest.TestCase):
    def test_results(self):
        r = ba.parse_tps(TPS_GOOD)
        self.assertEqual(r["count"], 2)
        self.assertTrue(r["complete"])
        self.assertFalse(r["ok"])
        self.assertEqual([p["name"] for p in r["programs"]],
                         ["t_load", "t_target"])
        cases = {c["name"]: c for p in r["programs"] for c in p["cases"]}
        self.assertEqual(cases["load_unload"]["result"], "passed")
        self.assertIsNone(cases["load_unload"]["reason"])
        self.assertEqual(cases["load_unload"]["stdout"], ["loaded"])
        self.assertEqual(cases["sysctl_tree"]["result"], "skipped")
        self.assertEqual(cases["sysctl_tree"]["reason"],
                         "not on a PVH guest, see README")
        self.assertEqual(cases["known_bug"]["result"], "expected_failure")
        self.assertEqual(cases["shrink"]["result"], "failed")
        self.assertEqual(cases["shrink"]["reason"],
                         "current 300000 KiB, want 262144 KiB")
        self.assertEqual(cases["shrink"]["stderr"],
                         ["target 262144, current 300000"])
        self.assertEqual(r["totals"], {"cases": 4, "broken_programs": 0,
                                       "passed": 1, "skipped": 1,
                                       "failed": 1, "expected_failure": 1})
        self.assertIn(("atf.version", "atf 0.21"), r["info"])
        self.assertEqual(r["noise"], [])
        problems = ba.tps_problems(r)
        self.assertEqual(len(problems), 2)
        self.assertIn("ATF t_target:shrink failed: current 300000 KiB, want "
                      "262144 KiB", problems)

    def test_all_passed_or_skipped_is_ok(self):
        text = "\r\n".join([
            'Content-Type: application/X-atf-tps; version="3"', "",
            "tps-count: 1", "tp-start: 1.5, /var/tmp/balloon/atf/t_a, 2",
            "tc-start: 1.6, a", "tc-end: 1.7, a, passed",
            "tc-start: 1.8, b", "tc-end: 1.9, b, skipped, no Xen",
            "tp-end: 2.0, /var/tmp/balloon/atf/t_a", ""])
        r = ba.parse_tps(text)
        self.assertTrue(r["ok"], ba.tps_problems(r))
        self.assertEqual(ba.tps_problems(r), [])
        self.assertEqual(r["programs"][0]["name"], "/var/tmp/balloon/atf/t_a")

    def test_broken_program(self):
        text = "\n".join([
            "tps-count: 2",
            "tp-start: 10.1, t_ok, 1", "tc-start: 10.2, x",
            "tc-end: 10.3, x, passed", "tp-end: 10.4, t_ok",
            "tp-start: 11.0, t_c_prog, 0",
            "tp-end: 11.1, t_c_prog, Invalid format for test case list: "
            "1: Unexpected token `<<EOF>>'; expected property name",
        ])
        r = ba.parse_tps(text)
        self.assertTrue(r["complete"])
        self.assertFalse(r["ok"])
        self.assertEqual(r["totals"]["broken_programs"], 1)
        self.assertEqual(r["totals"]["passed"], 1)
        broken = r["programs"][1]
        self.assertTrue(broken["broken"])
        self.assertTrue(broken["reason"].startswith("Invalid format"))
        self.assertIn("ATF program t_c_prog broken: Invalid format",
                      ba.tps_problems(r)[0])

    def test_cut_short(self):
        text = "\n".join(["tps-count: 2", "tp-start: 1.0, t_a, 2",
                          "tc-start: 1.1, one", "tc-end: 1.2, one, passed",
                          "tc-start: 1.3, two", "tc-so:still running"])
        r = ba.parse_tps(text)
        self.assertFalse(r["complete"])
        self.assertFalse(r["ok"])
        prog = r["programs"][0]
        self.assertTrue(prog["broken"])
        self.assertEqual(prog["cases"][1]["result"], "broken")
        self.assertEqual(r["totals"]["broken"], 1)
        self.assertIn("atf-run announced 2 test programs, 1 reported",
                      ba.tps_problems(r))

    def test_case_count_mismatch_and_unknown_state(self):
        text = "\n".join(["tps-count: 1", "tp-start: 1.0, t_a, 3",
                          "tc-start: 1.1, one", "tc-end: 1.2, one, exploded",
                          "tp-end: 1.3, t_a"])
        r = ba.parse_tps(text)
        prog = r["programs"][0]
        self.assertTrue(prog["broken"])
        self.assertEqual(prog["reason"], "announced 3 test cases, ran 1")
        self.assertEqual(prog["cases"][0]["result"], "broken")
        self.assertIn("exploded", prog["cases"][0]["reason"])

    def test_noise_and_old_format(self):
        text = "\n".join([
            "tps-count: 1", "balloon0: 393216 KiB, target 393216 KiB",
            "tp-start: t_old, 1", "tc-start: c", "tc-end: c, passed",
            "tp-end: t_old"])
        r = ba.parse_tps(text)
        self.assertTrue(r["ok"], ba.tps_problems(r))
        self.assertEqual(r["noise"],
                         ["balloon0: 393216 KiB, target 393216 KiB"])

    def test_nothing(self):
        for text in (None, "", "garbage\n"):
            r = ba.parse_tps(text)
            self.assertFalse(r["ok"])
            self.assertIsNone(r["count"])
            self.assertIn("no TPS output (no tps-count line)",
                          ba.tps_problems(r))
        r = ba.parse_tps("tps-count: 0\n")
        self.assertTrue(r["complete"])
        self.assertFalse(r["ok"])
        self.assertIn("ATF ran no test case", ba.tps_problems(r))


class MarkerTests(unittest.TestCase):
    def test_noise_cr_and_echoed_command(self):
        log = ("login: root\r\r\n"
               "anita-root-shell-prompt-1# echo '==TPS-''BEGIN=='; { cat "
               "/var/tmp/balloon/results.tps ; } 2>&1; echo '==TPS-''END=='\r\n"
               "echo ==TPS-BEGIN== (not alone on its line)\r\n"
               "==TPS-BEGIN==\r\r\n"
               "tps-count: 1\r\n"
               "tc-so:a line with ==TPS-BEGIN== in it\r\n"
               "\x00tp-start: 1.0, t_a, 0\r\n"
               "tc-se:and ==TPS-END== here\r\n"
               "  ==TPS-END==  \r\n"
               "exit_status=0=\r\n")
        self.assertEqual(ba.extract_between_markers(log),
                         "tps-count: 1\ntc-so:a line with ==TPS-BEGIN== in "
                         "it\ntp-start: 1.0, t_a, 0\ntc-se:and ==TPS-END== "
                         "here")

    def test_last_complete_block(self):
        log = ("==TPS-BEGIN==\nold\n==TPS-END==\n"
               "==TPS-BEGIN==\nnew\n==TPS-END==\n"
               "==TPS-BEGIN==\ncut off")
        self.assertEqual(ba.extract_between_markers(log), "new")
        self.assertEqual(ba.extract_blocks(log), ["old", "new"])

    def test_absent_or_unclosed(self):
        self.assertIsNone(ba.extract_between_markers("no markers\r\n"))
        self.assertIsNone(ba.extract_between_markers("==TPS-BEGIN==\nx\n"))
        self.assertIsNone(ba.extract_between_markers("==TPS-END==\n"))
        self.assertEqual(ba.extract_between_markers(
            "==TPS-BEGIN==\r\n==TPS-END==\r\n"), "")

    def test_custom_markers(self):
        log = "==A==\r\n42\r\n==B==\r\n==TPS-BEGIN==\nx\n==TPS-END==\n"
        self.assertEqual(ba.extract_between_markers(log, "==A==", "==B=="),
                         "42")

    def test_split_marker(self):
        q = ba.split_marker("==TPS-BEGIN==")
        self.assertEqual(q, "'==TPS-''BEGIN=='")
        p = subprocess.run(["/bin/sh", "-c", "echo " + q],
                           stdout=subprocess.PIPE, universal_newlines=True)
        self.assertEqual(p.stdout, "==TPS-BEGIN==\n")

    def test_sysctl_value(self):
        self.assertEqual(ba.parse_sysctl_value("393216\r\n"), 393216)
        self.assertEqual(ba.parse_sysctl_value(
            "balloon0: 393216 KiB, target 262144 KiB\r\n300000\r\n"), 300000)
        self.assertIsNone(ba.parse_sysctl_value(
            "sysctl: third level name 'balloon' in 'hw.balloon.current' is "
            "invalid\r\n"))
        self.assertIsNone(ba.parse_sysctl_value(None))


class MemFollowTests(unittest.TestCase):
    T = 262144  # 256 MiB

    def test_followed_at_first_sample_within_tolerance(self):
        samples = [(0.5, 524288), (1.6, 400000), (2.7, self.T + 1024),
                   (3.8, self.T)]
        r = ba.parse_mem_follow(samples, self.T, 1024, 120)
        self.assertEqual(r["status"], "followed")
        self.assertTrue(r["followed"])
        self.assertEqual(r["seconds"], 2.7)
        self.assertEqual(r["last_kib"], self.T + 1024)
        self.assertEqual(r["samples"], 4)

    def test_tolerance_edges_both_sides(self):
        for kib, want in ((self.T - 1024, "followed"),
                          (self.T + 1024, "followed"),
                          (self.T - 1025, "pending"),
                          (self.T + 1025, "pending")):
            with self.subTest(kib=kib):
                r = ba.parse_mem_follow([(1.0, kib)], self.T, 1024, 120)
                self.assertEqual(r["status"], want)

    def test_timed_out(self):
        samples = [(float(t), 300000) for t in range(0, 121)]
        r = ba.parse_mem_follow(samples, self.T, 1024, 120)
        self.assertEqual(r["status"], "timed_out")
        self.assertFalse(r["followed"])
        self.assertEqual(r["last_kib"], 300000)
        self.assertEqual(r["seconds"], 120.0)
        pending = ba.parse_mem_follow(samples[:120], self.T, 1024, 120)
        self.assertEqual(pending["status"], "pending")
        self.assertIsNone(pending["followed"])

    def test_unreadable_samples(self):
        r = ba.parse_mem_follow([(0.0, None), (1.0, None)], self.T, 1024, 120)
        self.assertEqual(r["status"], "pending")
        self.assertIsNone(r["last_kib"])
        r = ba.parse_mem_follow([(0.0, None), (1.0, self.T)], self.T, 1024, 120)
        self.assertEqual(r["status"], "followed")
        r = ba.parse_mem_follow([], self.T, 1024)
        self.assertEqual(r["status"], "timed_out")
        r = ba.parse_mem_follow([(5.0, 1)], self.T, 1024)
        self.assertEqual(r["status"], "timed_out")

    def test_growth(self):
        r = ba.parse_mem_follow([(1.0, 262144), (2.0, 524000)], 524288, 1024,
                                120)
        self.assertEqual((r["status"], r["seconds"]), ("followed", 2.0))


class DecideTests(unittest.TestCase):
    def good_tps(self):
        return ba.parse_tps("tps-count: 1\ntp-start: 1.0, t, 1\n"
                            "tc-start: 1.1, c\ntc-end: 1.2, c, passed\n"
                            "tp-end: 1.3, t\n")

    def mem(self, size, followed, counted=True):
        return {"size": size, "status": "followed" if followed else
                "timed_out", "followed": followed, "last_kib": 1,
                "counted": counted}

    def test_pass(self):
        ok, reasons = ba.decide(self.good_tps(), [self.mem("384m", True)],
                                True, True, True)
        self.assertTrue(ok)
        self.assertEqual(reasons, [])

    def test_failures(self):
        ok, reasons = ba.decide(self.good_tps(), [self.mem("384m", False)],
                                True, True, True)
        self.assertFalse(ok)
        self.assertEqual(reasons, ["mem-set 384m: timed_out (last "
                                   "hw.balloon.current 1 KiB)"])
        ok, reasons = ba.decide(None, [], True, True, True)
        self.assertEqual(reasons, ["ATF results missing"])
        ok, reasons = ba.decide(None, [], False, False, False)
        self.assertEqual(reasons, ["modload failed"])
        ok, reasons = ba.decide(None, [], False, True, False)
        self.assertEqual(reasons, ["modunload failed"])

    def test_restore_step_not_counted(self):
        ok, _ = ba.decide(None, [self.mem("512m", False, counted=False)],
                          False, True, True)
        self.assertTrue(ok)

    def test_summary(self):
        results = {"passed": False, "domain": "anita-9",
                   "options": {"release": URL, "memory_kib": 524288,
                               "maxmem_kib": 2097152},
                   "atf": self.good_tps(),
                   "mem_steps": [dict(self.mem("384m", True), seconds=3.25,
                                      target_kib=393216)],
                   "dmesg": ["balloon0: unloaded"], "reasons": ["x"]}
        text = "\n".join(ba.summary_lines(results))
        self.assertIn("FAILED", text)
        self.assertIn("ATF: 1 cases: 1 passed; 0 broken programs", text)
        self.assertIn("mem-set 384m   -> followed after 3.2s", text)
        self.assertIn("FAIL: x", text)


class TarDiskTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.kmod = os.path.join(self.tmp, "balloon.kmod")
        with open(self.kmod, "wb") as f:
            f.write(b"\x7fELF" + bytes(range(256)) * 80)
        self.atf = os.path.join(self.tmp, "atf")
        os.makedirs(os.path.join(self.atf, "__pycache__"))
        with open(os.path.join(self.atf, "Atffile"), "w") as f:
            f.write('Content-Type: application/X-atf-atffile; version="1"\n\n'
                    'prop: test-suite = balloon\n\ntp-glob: t_*\n')
        script = os.path.join(self.atf, "t_load.sh")
        with open(script, "w") as f:
            f.write("#! /usr/bin/atf-sh\n")
        os.chmod(script, 0o755)
        for junk in (".hidden", os.path.join("__pycache__", "x.pyc")):
            with open(os.path.join(self.atf, junk), "w") as f:
                f.write("junk")
        self.img = os.path.join(self.tmp, "out", "payload.img")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_padded_and_readable(self):
        size = ba.make_tar_disk([(self.kmod, "balloon.kmod"),
                                 (self.atf, "atf")], self.img)
        self.assertEqual(size, os.path.getsize(self.img))
        self.assertEqual(size % 10240, 0)
        self.assertGreater(size, 20480)
        with tarfile.open(self.img) as tar:
            members = {m.name: m for m in tar.getmembers()}
            self.assertEqual(sorted(members), ["atf", "atf/Atffile",
                                               "atf/t_load.sh",
                                               "balloon.kmod"])
            self.assertEqual(members["atf/t_load.sh"].mode & 0o777, 0o755)
            for m in members.values():
                self.assertEqual((m.uid, m.gid, m.uname), (0, 0, "root"))
            with tar.extractfile("balloon.kmod") as f:
                with open(self.kmod, "rb") as g:
                    self.assertEqual(f.read(), g.read())

    def test_extracts(self):
        ba.make_tar_disk([(self.kmod, "balloon.kmod"), (self.atf, "atf")],
                         self.img)
        dest = os.path.join(self.tmp, "x")
        os.makedirs(dest)
        with tarfile.open(self.img) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:
                tar.extractall(dest)
        script = os.path.join(dest, "atf", "t_load.sh")
        self.assertTrue(os.stat(script).st_mode & stat.S_IXUSR)
        self.assertTrue(os.path.isfile(os.path.join(dest, "atf", "Atffile")))
        self.assertFalse(os.path.exists(os.path.join(dest, "atf", ".hidden")))
        self.assertEqual(os.path.getsize(os.path.join(dest, "balloon.kmod")),
                         os.path.getsize(self.kmod))

    @unittest.skipUnless(shutil.which("tar"), "no tar here")
    def test_system_tar_reads_it_in_records(self):
        ba.make_tar_disk([(self.kmod, "balloon.kmod")], self.img)
        # A raw disk is read in whole records; every read here is full.
        with open(self.img, "rb") as f:
            while True:
                chunk = f.read(10240)
                if not chunk:
                    break
                self.assertEqual(len(chunk), 10240)
        dest = os.path.join(self.tmp, "y")
        os.makedirs(dest)
        subprocess.run(["tar", "-xf", self.img, "-C", dest], check=True)
        self.assertTrue(os.path.isfile(os.path.join(dest, "balloon.kmod")))

    def test_pad_to_record(self):
        path = os.path.join(self.tmp, "odd")
        for start, want in ((0, 0), (1, 10240), (10239, 10240),
                            (10240, 10240), (10241, 20480)):
            with self.subTest(start=start):
                with open(path, "wb") as f:
                    f.write(b"x" * start)
                self.assertEqual(ba.pad_to_record(path), want)
                with open(path, "rb") as f:
                    data = f.read()
                self.assertEqual(len(data), want)
                self.assertEqual(data[start:], b"\0" * (want - start))
        self.assertEqual(ba.pad_to_record(path, 512), 20480)

    def test_refusals(self):
        with self.assertRaises(ValueError):
            ba.make_tar_disk([(self.kmod, "../balloon.kmod")], self.img)
        with self.assertRaises(ValueError):
            ba.make_tar_disk([(self.kmod, "/balloon.kmod")], self.img)
        with self.assertRaises(FileNotFoundError):
            ba.make_tar_disk([(os.path.join(self.tmp, "nope"), "x")],
                             self.img)
        self.assertFalse(os.path.exists(self.img))


# --------------------------------------------------------------------------
# The runner over a fake anita and a fake xl.  This checks the runner's own
# control flow and bookkeeping; it says nothing about real anita, xl or NetBSD.

FAKE_XL = """#!/bin/sh
echo "$*" >> "$FAKE_XL_LOG"
case "$1" in
info) echo "host: fake"; exit 0 ;;
domid) echo 7; exit 0 ;;
mem-set) echo "$3" > "$FAKE_XL_TARGET"; exit 0 ;;
esac
exit 1
"""


class FakeChild(object):
    def __init__(self):
        self.logfile_read = None
        self.sent = []

    def expect(self, pattern, timeout=-1):
        if isinstance(pattern, list):
            return len(pattern) - 1     # the login: prompt
        return 0

    def send(self, text):
        self.sent.append(text)


class FakeGuest(object):
    """Canned answers to the inner command of each captured guest line."""

    def __init__(self, target_file, tps, modload_rc=0, lag_kib=0):
        self.target_file = target_file
        self.tps = tps
        self.modload_rc = modload_rc
        self.lag_kib = lag_kib

    def respond(self, inner):
        if inner == "sysctl -n hw.balloon.current":
            kib = 524288
            if os.path.exists(self.target_file):
                with open(self.target_file) as f:
                    kib = ba.size_to_kib(f.read().strip()) + self.lag_kib
            return "balloon0: noise\n%d\n" % kib, 0
        if inner.startswith("modload "):
            return ("" if self.modload_rc == 0 else
                    "modload: File exists\n"), self.modload_rc
        if inner == "cat /var/tmp/balloon/results.tps":
            return self.tps, 0
        if inner == "dmesg | grep balloon0":
            # NetBSD's dmesg(8) prints the kernel's time stamps.
            return ("[     1.234568] balloon0: PV guest, 524288 KiB of "
                    "2097152 KiB maximum\n"
                    "[    42.100000] balloon0: unloaded\n"), 0
        return "", 0


def make_fake_anita(guest, calls, tmp):
    class Dist(object):
        def __init__(self, kind, url):
            self.kind, self.url = kind, url

        def set_workdir(self, d):
            calls.append(("set_workdir", d))

    class Anita(object):
        def __init__(self, dist, **kw):
            calls.append(("Anita", dist.kind, dist.url, kw))
            self.dist = dist
            self.child = None

        def install(self):
            calls.append(("install",))

        def start_boot(self, vmm_args=None):
            calls.append(("start_boot", vmm_args))
            self.child = FakeChild()
            calls.append(("child", self.child))

        def login(self):
            calls.append(("login",))

        def shell_cmd(self, cmd, timeout=-1):
            m = re.search(r"\{ (.*) ; \} 2>&1", cmd)
            out, rc = guest.respond(m.group(1))
            path = os.path.join(tmp, "guest-out")
            with open(path, "w") as f:
                f.write(out)
            line = cmd.replace(m.group(0), "{ cat %s; (exit %d) ; } 2>&1" % (
                shlex.quote(path), rc))
            p = subprocess.run(["/bin/sh", "-c", line], stdout=subprocess.PIPE)
            echo = ("prompt# " + cmd + "\r\n").encode()
            self.child.logfile_read.write(echo)
            self.child.logfile_read.write(p.stdout.replace(b"\n", b"\r\n"))
            return p.returncode

        def halt(self):
            calls.append(("halt",))

        def cleanup(self):
            calls.append(("cleanup",))

    mod = types.ModuleType("anita")
    mod.__version__ = "2.18-fake"
    mod.Anita = Anita
    mod.URL = lambda url: Dist("url", url)
    mod.LocalDirectory = lambda d: Dist("dir", d)
    return mod


class RunnerTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir)
        for name, text in (("xl", FAKE_XL), ("mkisofs", "#!/bin/sh\n")):
            path = os.path.join(bindir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        self.xl_log = os.path.join(self.tmp, "xl.log")
        self.target = os.path.join(self.tmp, "target")
        self.env = {"PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
                    "FAKE_XL_LOG": self.xl_log, "FAKE_XL_TARGET": self.target}
        self.kmod = os.path.join(self.tmp, "balloon.kmod")
        with open(self.kmod, "wb") as f:
            f.write(b"\x7fELF")
        self.atf = os.path.join(self.tmp, "atf")
        os.makedirs(self.atf)
        with open(os.path.join(self.atf, "Atffile"), "w") as f:
            f.write("tp-glob: t_*\n")
        self.work = os.path.join(self.tmp, "work")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def run_fake(self, tps, *extra, **guest_kw):
        guest = FakeGuest(self.target, tps, **guest_kw)
        calls = []
        fake = make_fake_anita(guest, calls, self.tmp)
        ns = ba.build_parser().parse_args(
            ["--release", URL, "--kmod", self.kmod, "--atf-dir", self.atf,
             "--workdir", self.work, "--timeout", "2"] + list(extra))
        opts = ba.options_from_args(ns)
        out = io.StringIO()
        modules = {"anita": fake}
        if importlib.util.find_spec("pexpect") is None:
            modules["pexpect"] = types.ModuleType("pexpect")
        with mock.patch.dict(os.environ, self.env), \
                mock.patch.dict(sys.modules, modules), \
                mock.patch.object(ba, "SAMPLE_INTERVAL", 0.05):
            rc = ba.Runner(opts, ba.plan(opts), out=out).run()
        with open(os.path.join(self.work, ba.RESULTS_JSON)) as f:
            results = json.load(f)
        with open(self.xl_log) as f:
            xl = f.read().splitlines()
        return rc, results, xl, calls, out.getvalue()

    def test_all_good(self):
        tps = ("tps-count: 1\ntp-start: 1.0, t_a, 1\ntc-start: 1.1, c\n"
               "tc-end: 1.2, c, passed\ntp-end: 1.3, t_a\n")
        rc, results, xl, calls, out = self.run_fake(tps)
        self.assertEqual(rc, 0, out)
        self.assertTrue(results["passed"])
        self.assertEqual(results["reasons"], [])
        dom = "anita-%d" % os.getpid()
        self.assertEqual(xl, ["info", "domid " + dom,
                              "mem-set %s 384m" % dom, "mem-set %s 512m" % dom,
                              "mem-set %s 256m" % dom,
                              "mem-set %s 512m" % dom])
        self.assertEqual([m["status"] for m in results["mem_steps"]],
                         ["followed"] * 4)
        self.assertEqual([m["last_kib"] for m in results["mem_steps"]],
                         [393216, 524288, 262144, 524288])
        self.assertEqual(results["atf"]["totals"]["passed"], 1)
        self.assertEqual(results["dmesg"][-1], "balloon0: unloaded",
                         "the kernel's time stamps are stripped")
        self.assertIn(("set_workdir", self.work), calls)
        child = [c[1] for c in calls if c[0] == "child"][0]
        self.assertEqual(child.sent, ["disable balloon\r", "quit\r"])
        boots = [c for c in calls if c[0] == "start_boot"]
        self.assertEqual(boots, [("start_boot", [
            "maxmem=2048", 'extra="-c"',
            "disk=file:%s,xvdb,r" % os.path.join(self.work,
                                                 ba.PAYLOAD_IMAGE)])])
        self.assertEqual([c[0] for c in calls if c[0] in (
            "install", "login", "halt")], ["install", "login", "halt"])
        ctor = [c for c in calls if c[0] == "Anita"]
        self.assertEqual(ctor[0][1:3], ("url", URL))
        self.assertEqual(ctor[0][3]["memory_size"], "512M")
        self.assertTrue(ctor[1][3]["no_install"])
        with tarfile.open(os.path.join(self.work, ba.PAYLOAD_IMAGE)) as tar:
            self.assertEqual(sorted(tar.getnames()),
                             ["atf", "atf/Atffile", "balloon.kmod"])
        with open(os.path.join(self.work, ba.RESULTS_TEXT)) as f:
            self.assertTrue(f.read().startswith("balloon-anita 1: PASSED"))
        with open(os.path.join(self.work, ba.CONSOLE_LOG), "rb") as f:
            self.assertIn(b"==TPS-BEGIN==\r\n", f.read())

    def test_failing_case_and_slow_follow(self):
        tps = ("tps-count: 1\ntp-start: 1.0, t_a, 1\ntc-start: 1.1, c\n"
               "tc-end: 1.2, c, failed, boom\ntp-end: 1.3, t_a\n")
        rc, results, xl, calls, out = self.run_fake(tps, "--timeout", "0.3",
                                                    lag_kib=4096)
        self.assertEqual(rc, 1)
        self.assertFalse(results["passed"])
        self.assertIn("ATF t_a:c failed: boom", results["reasons"])
        self.assertEqual([m["status"] for m in results["mem_steps"]],
                         ["timed_out"] * 4)
        self.assertGreaterEqual(results["mem_steps"][0]["seconds"], 0.3)
        self.assertEqual(results["mem_steps"][0]["last_kib"], 393216 + 4096)

    def test_modload_refused(self):
        rc, results, xl, calls, out = self.run_fake("", modload_rc=1)
        self.assertEqual(rc, 1)
        self.assertEqual(results["reasons"][0], "modload failed")
        self.assertEqual([line.split()[0] for line in xl], ["info", "domid"])
        self.assertTrue(all(m["status"].startswith("skipped")
                            for m in results["mem_steps"]))
        self.assertIn(("halt",), calls)

    def test_missing_kmod_stops_before_anita(self):
        os.unlink(self.kmod)
        rc, results, xl, calls, out = self.run_fake("")
        self.assertEqual(rc, 1)
        self.assertEqual(results["reasons"][0], "stopped: check-kmod failed")
        self.assertEqual(calls, [])
        self.assertEqual(xl, ["info"])


if __name__ == "__main__":
    unittest.main()
