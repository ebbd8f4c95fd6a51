#!/usr/bin/env bash
# issue.sh DIR ROLE NAME [--days N] [--dns NAME]... [--ip ADDR]...
# Issues a leaf certificate from the CA in DIR with the openssl CLI: ECDSA P-256, subject O=<cluster>/OU=ROLE/CN=NAME,
# key usage digitalSignature, extended key usage by role (server and/or client auth). The sync roles take KubeVirt's
# fixed common names and ignore NAME. Writes DIR/issued/ROLE-NAME.pem and DIR/issued/ROLE-NAME-key.pem (0600).
. "$(dirname "$0")/lib.sh"
[ $# -ge 3 ] || die "usage: issue.sh DIR ROLE NAME [--days N] [--dns NAME]... [--ip ADDR]..."
dir=$1 role=$2 name=$3
shift 3
days=1 san=()
while [ $# -gt 0 ]; do
    case $1 in
        --days) days=$2; shift 2 ;;
        --dns) san+=("DNS:$2"); shift 2 ;;
        --ip) san+=("IP:$2"); shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ $days =~ ^[0-9]+$ ]] || die "--days takes a whole number"
need_dir "$dir"
[ -f "$dir/ca.pem" ] && [ -f "$dir/ca-key.pem" ] || die "$dir holds no CA; run make-ca.sh first"
cluster=$(openssl x509 -in "$dir/ca.pem" -noout -subject -nameopt multiline | sed -n 's/^ *organizationName *= *//p')
case $role in
    controller|node) eku="serverAuth,clientAuth" cn=$name ;;
    user) eku="clientAuth" cn=$name ;;
    sync-client) eku="clientAuth" cn="kubevirt.io:system:client:virt-synchronization-controller" name=sync ;;
    sync-server) eku="serverAuth" cn="kubevirt.io:system:node:virt-synchronization-controller" name=sync ;;
    *) die "unknown role \"$role\"; known roles: controller, node, user, sync-client, sync-server" ;;
esac
# The name goes into the subject (-subj "/…/CN=NAME"; the sync roles take their fixed CN) and into file names: only
# what a node or user name may be (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit),
# so it can neither add subject attributes ("a1/OU=controller") nor lead out of DIR/issued.
[[ $name =~ ^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$ ]] || die "\"$name\" is not a valid name: 1-63 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit"
mkdir -p "$dir/issued"
key="$dir/issued/$role-$name-key.pem" crt="$dir/issued/$role-$name.pem"
ext=$(mktemp)
trap 'rm -f "$ext" "$dir/issued/.req.pem"' EXIT
{
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$eku"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid"
    if [ ${#san[@]} -gt 0 ]; then (IFS=,; echo "subjectAltName=${san[*]}"); fi
} > "$ext"
(umask 077; openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$key")
openssl req -new -key "$key" -subj "/O=$cluster/OU=$role/CN=$cn" -out "$dir/issued/.req.pem"
openssl x509 -req -in "$dir/issued/.req.pem" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
    -sha256 -days "$days" -extfile "$ext" -out "$crt" 2>/dev/null
echo "issued $crt ($role, CN=$cn)"
