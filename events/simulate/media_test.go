package simulate_test

import (
	"bytes"
	"encoding/json"
	"image/gif"
	"image/png"
	"testing"

	"github.com/exportstream/exportstream/events/simulate"
)

// TestMediaOf: with BlobPaths, every uploaded image, video and text file
// carries blob_path, and MediaOf makes its object under that key: a PNG
// of the image's size, an animated GIF of the video's size, the text
// whose words sit where the tokens say. Other files carry none; without
// BlobPaths no file does.
func TestMediaOf(t *testing.T) {
	for _, on := range []bool{true, false} {
		s := simulate.New(simulate.Options{Seed: 7, Files: 12, BlobPaths: on}, nil)
		seen := map[string]int{}
		for range 3000 {
			_, body, _ := s.Next()
			var ev struct {
				Type string `json:"type"`
				Data struct {
					File *struct {
						ID       int     `json:"id"`
						Type     string  `json:"type"`
						BlobPath *string `json:"blob_path"`
						Image    *struct{ Width, Height int }
						Video    *struct{ Width, Height int }
						Text     *struct {
							Tokens struct {
								Words []struct {
									Value     string `json:"value"`
									StartChar int    `json:"start_char"`
									EndChar   int    `json:"end_char"`
								} `json:"words"`
							} `json:"tokens"`
						}
					} `json:"file"`
				} `json:"data"`
			}
			if err := json.Unmarshal(body, &ev); err != nil {
				t.Fatal(err)
			}
			f := ev.Data.File
			obj, ok := simulate.MediaOf(body)
			if f == nil || ev.Type != "diffgram.file.uploaded" {
				if ok {
					t.Fatalf("MediaOf(%s) made an object", ev.Type)
				}
				continue
			}
			media := f.Type == "image" || f.Type == "video" || f.Type == "text"
			if !on || !media {
				if f.BlobPath != nil || ok {
					t.Fatalf("file %d (%s, blob paths %t): blob_path %v, object %t", f.ID, f.Type, on, f.BlobPath, ok)
				}
				continue
			}
			if f.BlobPath == nil || !ok || obj.Key != *f.BlobPath || len(obj.Data) == 0 {
				t.Fatalf("file %d (%s): blob_path %v, object %q (%t)", f.ID, f.Type, f.BlobPath, obj.Key, ok)
			}
			seen[f.Type]++
			switch f.Type {
			case "image":
				img, err := png.Decode(bytes.NewReader(obj.Data))
				if err != nil || obj.ContentType != "image/png" || img.Bounds().Dx() != f.Image.Width || img.Bounds().Dy() != f.Image.Height {
					t.Errorf("file %d: image %v (%v, %s), want a %dx%d PNG", f.ID, img.Bounds(), err, obj.ContentType, f.Image.Width, f.Image.Height)
				}
			case "video":
				g, err := gif.DecodeAll(bytes.NewReader(obj.Data))
				if err != nil || obj.ContentType != "image/gif" || len(g.Image) < 2 || g.Config.Width != f.Video.Width || g.Config.Height != f.Video.Height {
					t.Errorf("file %d: video stand-in %v, want an animated %dx%d GIF", f.ID, err, f.Video.Width, f.Video.Height)
				}
			case "text":
				for _, w := range f.Text.Tokens.Words {
					if w.EndChar > len(obj.Data) || string(obj.Data[w.StartChar:w.EndChar]) != w.Value {
						t.Errorf("file %d: word %q not at %d..%d of %q", f.ID, w.Value, w.StartChar, w.EndChar, obj.Data)
					}
				}
			}
			again, _ := simulate.MediaOf(body)
			if !bytes.Equal(again.Data, obj.Data) {
				t.Errorf("file %d: MediaOf made other bytes the second time", f.ID)
			}
		}
		if on && (seen["image"] == 0 || seen["video"] == 0 || seen["text"] == 0) {
			t.Errorf("media objects by type %v, want images, videos and texts", seen)
		}
	}
}
