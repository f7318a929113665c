package nft

import (
	"encoding/binary"
	"net/netip"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
)

// Names of our sets. Named sets keep each rule one lookup however long the lists.
const (
	setWorkloads4      = "workloads_v4"
	setWorkloads6      = "workloads_v6"
	setInboundExcluded = "inbound_excluded_ports"
	setLeftOut4        = "unmeshed_v4"
	setLeftOut6        = "unmeshed_v6"

	setOutboundExcluded = "outbound_excluded_ports"
	setExcludedCIDRs4   = "excluded_cidrs_v4"
	setExcludedCIDRs6   = "excluded_cidrs_v6"
	setExcludedUIDs     = "excluded_uids"
	setExcludedGIDs     = "excluded_gids"
)

// set is a named set of the table: its kernel type, and its elements both as
// text (as `nft list` prints them) and as key bytes.
type set struct {
	id       uint32 // unique within the table; lets rules refer to it in the same batch
	name     string
	keyType  nftables.SetDatatype
	interval bool
	elems    []element
}

// element is one element of a set. For interval sets it is the half-open range
// [key, end); end is nil when the range runs to the last address.
type element struct {
	text string
	key  []byte
	end  []byte
}

// hostOrder reports whether the key type is stored in host byte order (uid, gid);
// nft needs to know to print the elements.
func (s set) hostOrder() bool {
	return s.keyType.Name == nftables.TypeUID.Name || s.keyType.Name == nftables.TypeGID.Name
}

// addrSet is a set of addresses of one family.
func addrSet(name string, v6 bool, addrs []netip.Addr) set {
	s := emptyAddrSet(name, v6)
	for _, a := range addrs {
		s.elems = append(s.elems, element{text: a.String(), key: a.AsSlice()})
	}
	return s
}

// emptyAddrSet is an empty set of IPv6 addresses if v6, else of IPv4 addresses.
func emptyAddrSet(name string, v6 bool) set {
	s := set{name: name, keyType: nftables.TypeIPAddr}
	if v6 {
		s.keyType = nftables.TypeIP6Addr
	}
	return s
}

// prefixSet is an interval set of disjoint prefixes of one family.
func prefixSet(name string, v6 bool, prefixes []netip.Prefix) set {
	s := emptyAddrSet(name, v6)
	s.interval = true
	for _, p := range prefixes {
		e := element{text: p.String(), key: p.Addr().AsSlice()}
		if p.IsSingleIP() {
			e.text = p.Addr().String() // as nft prints it
		}
		if next, ok := afterPrefix(p); ok {
			e.end = next.AsSlice()
		}
		s.elems = append(s.elems, e)
	}
	return s
}

// afterPrefix is the first address after p, if there is one.
func afterPrefix(p netip.Prefix) (netip.Addr, bool) {
	last := p.Addr()
	bits := last.BitLen()
	b := last.AsSlice()
	for i := p.Bits(); i < bits; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ = netip.AddrFromSlice(b)
	next := last.Next()
	return next, next.IsValid()
}

func portSet(name string, ports []uint16) set {
	s := set{name: name, keyType: nftables.TypeInetService}
	for _, p := range ports {
		s.elems = append(s.elems, element{text: strconv.Itoa(int(p)), key: binary.BigEndian.AppendUint16(nil, p)})
	}
	return s
}

// idSet is a set of uids or gids; the kernel compares them in host byte order.
func idSet(name string, keyType nftables.SetDatatype, ids []uint32) set {
	s := set{name: name, keyType: keyType}
	for _, id := range ids {
		s.elems = append(s.elems, element{text: strconv.FormatUint(uint64(id), 10), key: binaryutil.NativeEndian.PutUint32(id)})
	}
	return s
}
