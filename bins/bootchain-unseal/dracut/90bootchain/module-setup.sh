#!/bin/bash
# dracut module "bootchain": unlocks LUKS2 volumes with their TPM2 tokens (systemd-tpm2 or
# bootchain-tpm2) through bootchain-unseal, in dracut's systemd initrd.
#  - bootchain-askpass.path/.service: a systemd password agent (systemd.io/PASSWORD_AGENTS)
#    that answers systemd-cryptsetup's passphrase requests with the unsealed token passphrase;
#    when unsealing fails, the request stays for the console agent (recovery passphrase).
#  - bootchain-lock.service: after cryptsetup.target, extends the lock PCRs, so nothing after
#    the initrd (or after a typed passphrase) can unseal again in this boot.
# Use: dracut --add bootchain (or add_dracutmodules+=" bootchain " in /etc/dracut.conf.d/),
# with /usr/bin/bootchain-unseal from `cargo build --profile release-unseal -p bootchain-unseal`.

check() {
    require_binaries /usr/bin/bootchain-unseal || return 1
    # Only when asked for: it changes how volumes are unlocked.
    return 255
}

depends() {
    echo systemd crypt
    return 0
}

installkernel() {
    # The TPM drivers (no-ops where they are built in, as in Debian's kernels).
    hostonly='' instmods tpm_crb tpm_tis
}

install() {
    inst_binary /usr/bin/bootchain-unseal
    # libtss2-tctildr dlopen()s the TCTI; ldd cannot see it. systemd-cryptsetup dlopen()s
    # libtss2-esys/-rc/-mu for its own TPM2 token support (tpm2-device=).
    inst_libdir_file "libtss2-tcti-device.so.0*" "libtss2-esys.so.0*" "libtss2-rc.so.0*" \
        "libtss2-mu.so.0*" "cryptsetup/libcryptsetup-token-systemd-tpm2.so"
    # systemd-pcrlock's policy file, for tokens enrolled with --tpm2-pcrlock (not secret; the
    # TPM checks it against its NV index). Rebuild after `systemd-pcrlock make-policy`.
    if [[ -e /var/lib/systemd/pcrlock.json ]]; then
        inst_simple /var/lib/systemd/pcrlock.json
    fi
    inst_multiple cryptsetup sed tr cp mkdir
    inst_multiple -o systemd-ask-password "$systemdutildir/systemd-reply-password"
    inst_script "$moddir/bootchain-askpass.sh" /usr/lib/bootchain/bootchain-askpass
    inst_simple "$moddir/bootchain-askpass.path" "$systemdsystemunitdir/bootchain-askpass.path"
    inst_simple "$moddir/bootchain-askpass.service" "$systemdsystemunitdir/bootchain-askpass.service"
    inst_simple "$moddir/bootchain-lock.service" "$systemdsystemunitdir/bootchain-lock.service"
    $SYSTEMCTL -q --root "$initdir" enable bootchain-askpass.path bootchain-lock.service
}
