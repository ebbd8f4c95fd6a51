#!/usr/bin/env bash
# make-ca.sh CLUSTER DIR [DAYS]
# Creates a cluster CA with the openssl CLI: ECDSA P-256, O=CLUSTER, CA:TRUE pathlen:0, valid DAYS (default 7).
# Writes DIR/ca.pem, DIR/ca-key.pem (0600) and DIR/ca-bundle.pem (the kubevirt-ca bundle).
. "$(dirname "$0")/lib.sh"
[ $# -ge 2 ] || die "usage: make-ca.sh CLUSTER DIR [DAYS]"
cluster=$1 dir=$2 days=${3:-7}
[[ $cluster =~ ^[a-z0-9][a-z0-9.-]{0,62}$ ]] || die "cluster name \"$cluster\" must be 1-63 characters of a-z, 0-9, '-' and '.'"
mkdir -p "$dir"
[ ! -e "$dir/ca.pem" ] || die "$dir already holds a CA"
umask 077
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca-key.ec.pem"
openssl pkcs8 -topk8 -nocrypt -in "$dir/ca-key.ec.pem" -out "$dir/ca-key.pem"
rm -f "$dir/ca-key.ec.pem"
umask 022
openssl req -x509 -new -key "$dir/ca-key.pem" -sha256 -days "$days" \
    -subj "/O=$cluster/CN=vmsync-ca@$cluster@$(date +%s)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$dir/ca.pem"
cp "$dir/ca.pem" "$dir/ca-bundle.pem"
: > "$dir/external-ca.pem"
echo "created $dir/ca.pem (cluster $cluster, $days days)"
