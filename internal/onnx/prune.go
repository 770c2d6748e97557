package onnx

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of onnx.proto (ModelProto, GraphProto, NodeProto,
// TensorProto, ValueInfoProto) that Graph reads or rewrites.
const (
	modelGraph       protowire.Number = 7
	graphNode        protowire.Number = 1
	graphInitializer protowire.Number = 5
	graphInput       protowire.Number = 11
	graphOutput      protowire.Number = 12
	nodeInput        protowire.Number = 1
	nodeOutput       protowire.Number = 2
	nodeName         protowire.Number = 3
	nodeOpType       protowire.Number = 4
	tensorName       protowire.Number = 8
	valueInfoName    protowire.Number = 1
)

// Graph is the computation graph of an ONNX model file, read from its
// bytes: its nodes in the file's order (a topological one) and its
// outputs' names.
type Graph struct {
	Nodes   []Node
	Outputs []string

	model    []byte
	inputs   []string       // the graph's inputs, initializers among them in older files
	producer map[string]int // tensor name to the index of the node that makes it
}

// Node is one operator of a Graph.
type Node struct {
	Op, Name        string
	Inputs, Outputs []string
}

// errNotModel is wrapped by ReadGraph's errors.
var errNotModel = errors.New("not an ONNX model")

// ReadGraph reads the graph of an ONNX model's bytes. It returns an error
// when they are not a well-formed ModelProto with a graph.
func ReadGraph(model []byte) (*Graph, error) {
	g := &Graph{model: model, producer: map[string]int{}}
	var graph []byte
	err := eachField(model, func(num protowire.Number, v []byte, _ []byte) error {
		if num == modelGraph {
			graph = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if graph == nil {
		return nil, fmt.Errorf("onnx: %w: no graph", errNotModel)
	}
	err = eachField(graph, func(num protowire.Number, v []byte, _ []byte) error {
		switch num {
		case graphNode:
			var n Node
			err := eachField(v, func(num protowire.Number, v []byte, _ []byte) error {
				switch num {
				case nodeInput:
					n.Inputs = append(n.Inputs, string(v))
				case nodeOutput:
					n.Outputs = append(n.Outputs, string(v))
				case nodeName:
					n.Name = string(v)
				case nodeOpType:
					n.Op = string(v)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, o := range n.Outputs {
				g.producer[o] = len(g.Nodes)
			}
			g.Nodes = append(g.Nodes, n)
		case graphInput, graphOutput:
			name, err := stringField(v, valueInfoName)
			if err != nil {
				return err
			}
			if num == graphInput {
				g.inputs = append(g.inputs, name)
			} else {
				g.Outputs = append(g.Outputs, name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// Producer returns the node whose output tensor is named name, or nil for
// a graph input, an initializer or an unknown name.
func (g *Graph) Producer(name string) *Node {
	i, ok := g.producer[name]
	if !ok {
		return nil
	}
	return &g.Nodes[i]
}

// Prune returns the model's bytes with outputs as its graph's outputs, in
// that order, and only the nodes and initializers they need (and the
// initializers an older file lists among its inputs); everything else in
// the file (metadata, opsets, the inputs) is kept as it is.
// ONNX Runtime infers the new outputs' types. It returns an error when an
// output is not made by a node of the graph.
func (g *Graph) Prune(outputs []string) ([]byte, error) {
	need := map[string]bool{}
	for _, in := range g.inputs {
		need[in] = true
	}
	for _, o := range outputs {
		if g.Producer(o) == nil {
			return nil, fmt.Errorf("onnx: no node makes %q", o)
		}
		need[o] = true
	}
	keep := make([]bool, len(g.Nodes))
	for i := len(g.Nodes) - 1; i >= 0; i-- {
		for _, o := range g.Nodes[i].Outputs {
			keep[i] = keep[i] || need[o]
		}
		if keep[i] {
			for _, in := range g.Nodes[i].Inputs {
				need[in] = true
			}
		}
	}
	// At most the file's size, and nearly all of it (the weights): no
	// copy grown as it goes.
	model := make([]byte, 0, len(g.model))
	err := eachField(g.model, func(num protowire.Number, v []byte, raw []byte) error {
		if num != modelGraph {
			model = append(model, raw...)
			return nil
		}
		graph := make([]byte, 0, len(v))
		node, outputsDone := 0, false
		err := eachField(v, func(num protowire.Number, v []byte, raw []byte) error {
			switch num {
			case graphNode:
				if keep[node] {
					graph = append(graph, raw...)
				}
				node++
			case graphInitializer:
				name, err := stringField(v, tensorName)
				if err != nil {
					return err
				}
				if need[name] {
					graph = append(graph, raw...)
				}
			case graphOutput:
				if !outputsDone {
					for _, o := range outputs {
						var vi []byte
						vi = protowire.AppendTag(vi, valueInfoName, protowire.BytesType)
						vi = protowire.AppendString(vi, o)
						graph = protowire.AppendTag(graph, graphOutput, protowire.BytesType)
						graph = protowire.AppendBytes(graph, vi)
					}
					outputsDone = true
				}
			default:
				graph = append(graph, raw...)
			}
			return nil
		})
		if err != nil {
			return err
		}
		model = protowire.AppendTag(model, modelGraph, protowire.BytesType)
		model = protowire.AppendBytes(model, graph)
		return nil
	})
	return model, err
}

// eachField calls f with each field of the protobuf message b: its number,
// its bytes when it is length-delimited (nil otherwise) and the whole
// field as encoded. It returns the first error of f, or one for bytes
// that are not a message.
func eachField(b []byte, f func(num protowire.Number, v []byte, raw []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("onnx: %w: %v", errNotModel, protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return fmt.Errorf("onnx: %w: %v", errNotModel, protowire.ParseError(m))
		}
		var v []byte
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(b[n:])
		}
		if err := f(num, v, b[:n+m]); err != nil {
			return err
		}
		b = b[n+m:]
	}
	return nil
}

// stringField returns the last value of field num of message b ("" when
// it has none), or an error for bytes that are not a message.
func stringField(b []byte, num protowire.Number) (string, error) {
	var s string
	err := eachField(b, func(n protowire.Number, v []byte, _ []byte) error {
		if n == num {
			s = string(v)
		}
		return nil
	})
	return s, err
}
