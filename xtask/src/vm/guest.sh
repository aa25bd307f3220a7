#!/bin/bash
# Written by `cargo xtask vm-test` from xtask/src/vm/guest.sh; runs in the VM, as root.
# Its output goes to output.log in the run's directory ($out, shared read-write with the
# VM) and its exit status to rc: without udev on the host virtme-ng cannot pass either
# back itself.
out={{OUT}}
# The VM's console is a login (a shell on ttyS0), and a login's work is every process
# forked from it: run from there, the tests' own terminals would be nested in it. So the
# job runs detached: a new session without a terminal, reparented to init (setsid -f),
# while the console waits for its rc.
if [ -z "$VM_TEST_DETACHED" ]; then VM_TEST_DETACHED=1 setsid -f bash "$0" </dev/null >/dev/null 2>&1; while [ ! -e "$out/rc" ]; do sleep 1; done; exit 0; fi
exec >"$out/output.log" 2>&1 </dev/null
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root RUST_BACKTRACE=1
export SESSION_MONITOR_BIN={{DAEMON}}
export SESSION_MONITOR_BACKEND={{BACKEND}}
# Stock Debian kernels allow BPF trampolines: tests/backends.rs must then see fentry
# work, not accept a refusal.
export SESSION_MONITOR_EXPECT_FENTRY=1
uname -r >"$out/kernel"
echo "vm-test: kernel $(uname -r), backend $SESSION_MONITOR_BACKEND, $(nproc) CPUs"
grep -qs ' /sys/fs/bpf bpf ' /proc/mounts || mount -t bpf bpf /sys/fs/bpf
grep -qs ' /sys/kernel/tracing tracefs ' /proc/mounts || mount -t tracefs tracefs /sys/kernel/tracing
# virtme-ng bind-mounts its own copy over /etc/shadow (to clear root's password);
# useradd replaces the file by renaming, which a mount point forbids. Underneath is the
# VM's writable overlay of /etc.
while grep -qs ' /etc/shadow ' /proc/mounts; do umount /etc/shadow || break; done
# systemd-tmpfiles creates /run/nologin and nothing in the VM removes it at the end of
# boot, as systemd-user-sessions would: PAM would refuse every login but root's.
rm -f /run/nologin
# The VM's /etc, /home and /tmp are overlays on the host's live directories: a test run
# on the host creating and deleting users at the same time shows through (seen: useradd
# failing on the host's /etc/shadow.lock). The tests get private copies: /etc copied to
# a tmpfs, an empty /home (unless the workspace is there) and TMPDIR for the harness's
# temporary directories.
mkdir -p /run/vm-test/etc /run/vm-test/tmp && chmod 1777 /run/vm-test/tmp
cp -a /etc/. /run/vm-test/etc/ && mount --bind /run/vm-test/etc /etc
case {{WORKSPACE}} in /home | /home/*) ;; *) mount -t tmpfs -o mode=755 tmpfs /home ;; esac
export TMPDIR=/run/vm-test/tmp
status=0
# The job: the test binaries, or the benchmark. It sets status when it fails.
{{BODY}}
echo "vm-test: done (status $status)"
# Last: the console stops waiting, and the VM powers off, once rc exists.
echo "$status" >"$out/rc"
