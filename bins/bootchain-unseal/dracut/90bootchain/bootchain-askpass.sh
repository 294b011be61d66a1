#!/bin/sh
# bootchain-askpass: answers systemd-cryptsetup's pending passphrase requests
# (/run/systemd/ask-password/ask.*, Id=cryptsetup:<device>) with the passphrase unsealed from
# the volume's TPM2 token. Each device is tried once per boot; bootchain-unseal locks the
# boot after its attempt, so a failed attempt leaves the request to the console agent and a
# typed recovery passphrase then cannot be followed by another unseal.
mkdir -p /run/bootchain
# Keep the UKI's .pcrsig (from systemd-stub) where systemd keeps it for the rest of the boot.
if [ -f /.extra/tpm2-pcr-signature.json ] && [ ! -e /run/systemd/tpm2-pcr-signature.json ]; then
    mkdir -p /run/systemd && cp /.extra/tpm2-pcr-signature.json /run/systemd/
fi
for ask in /run/systemd/ask-password/ask.*; do
    [ -f "$ask" ] || continue
    id=$(sed -n 's/^Id=//p' "$ask")
    socket=$(sed -n 's/^Socket=//p' "$ask")
    case "$id" in
        cryptsetup:/*) dev=${id#cryptsetup:} ;;
        *) continue ;;
    esac
    tried=/run/bootchain/tried$(echo "$dev" | tr / _)
    [ -e "$tried" ] && continue
    : > "$tried"
    echo "bootchain: unsealing the TPM2 token of $dev"
    if /usr/bin/bootchain-unseal --ask-pin /usr/bin/systemd-ask-password \
        --reply-password "$socket" --luks "$dev"; then
        echo "bootchain: answered the passphrase request for $dev"
    else
        echo "bootchain: TPM2 unlock of $dev refused; type a recovery passphrase"
    fi
done
exit 0
